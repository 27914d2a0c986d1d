//! The waiter thread behind the await-able forms of the kinds the kernel gives no descriptor
//! for (POSIX semaphores, robust mutexes, System V sets): one per process, started by the first
//! wait that has to wait, serving every such wait of the process.
//!
//! It only watches, and wakes tasks. A future takes its unit, applies its operations, or has
//! its lock taken (through [`Helper::call`], see below) only inside its own `poll`, which
//! returns what it took: so a future dropped at any moment has taken nothing and holds nothing.
//! What the thread watches, and how:
//!
//! - A POSIX semaphore: it counts itself as a waiter as glibc's `sem_wait` does (one more in
//!   `nwaiters`, the high half of the semaphore's 64-bit word), so that `sem_post` in any
//!   process wakes a futex waiter on the value word, and sleeps on the value words of all
//!   watched semaphores at once with `futex_waitv` (Linux 5.16).
//! - A robust mutex: it sets `FUTEX_WAITERS` in the lock word, as a blocked
//!   `pthread_mutex_lock` does, so that the holder's unlock (or the kernel, when the holder
//!   dies) wakes a futex waiter, and sleeps on the lock word in the same `futex_waitv`.
//! - A System V set (no futex exists for it): it reads the values (`semctl(GETVAL)`) on a
//!   backoff schedule, 50 µs after the wait began, doubling to every 5 ms, on a grid that waits
//!   at the same interval share, and wakes a task whose operations would now go through.
//!
//! When a word changes, it wakes as many watching tasks as there are units (one for a free
//! mutex); the others keep watching. A task that loses the race to another process watches
//! again. A task woken, or merely watching, that is dropped without taking its unit passes a
//! wake-up on (`FUTEX_WAKE` on the word, if a unit is there or the mutex is free): the post or
//! unlock may have woken this thread instead of a waiter in another process, which must not be
//! left asleep. If units stay available while watchers are left unwoken (a woken task that is
//! slow to be polled, or a future that was forgotten), it looks again a millisecond later.
//!
//! A pthread mutex belongs to the thread that locked it, so this thread also takes and releases
//! the locks of async guards, on request ([`Helper::call`]): the calling thread hands the
//! operation over and waits for the result, which this thread, never blocked on anything but
//! its `futex_waitv` (that the request interrupts), returns at once.
//!
//! The thread blocks all signals (handlers run on the application's threads) and lives until
//! the process ends. After `fork`, the child has no such thread: the handles' drops check the
//! pid first and touch nothing of the parent's.
//!
//! A word's memory is kept mapped by the `Arc` of its waiter entry while the entry exists and
//! is only read or written under the state lock. The addresses handed to `futex_waitv` after
//! the lock is released may outlive an entry removed meanwhile; its removal rings the doorbell
//! (after the removal, before the memory goes), so such a `futex_waitv` returns at once
//! (`EAGAIN`, the doorbell changed): the kernel at most reads the stale address, never writes.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Waker;

use rustix::io::Errno;
use rustix::thread::futex;
use rustix::time::{ClockId, Timespec};

use crate::error::{Error, Result};
use crate::mutex::RobustMutex;
use crate::sys::SemCell;

/// A POSIX semaphore the thread can watch.
pub(crate) trait SemTarget: Send + Sync + 'static {
    /// Its memory.
    fn sem_cell(&self) -> &SemCell;
}

/// A robust mutex the thread can watch, lock and unlock.
pub(crate) trait MutexTarget: Send + Sync + 'static {
    /// The mutex.
    fn robust(&self) -> &RobustMutex;
}

/// What a waiter waits for.
pub(crate) enum Watch {
    /// A unit of this semaphore.
    Sem(Arc<dyn SemTarget>),
    /// This mutex to be free (or its holder dead).
    Mutex(Arc<dyn MutexTarget>),
    /// A System V set's id and the operations, `(index, delta)`, its task will apply.
    Sysv { id: i32, ops: Box<[(u16, i16)]> },
}

/// `futex_waitv` takes at most this many words.
const WAITV_MAX: usize = 128;
/// Units available but watchers left unwoken, more words than `futex_waitv` takes, or no
/// futex to sleep on (no `futex_waitv`; a layout other than glibc's): look again this soon.
const RECHECK_NS: u64 = 1_000_000;
/// The first look at a System V wait, and the longest interval between looks.
const SYSV_FIRST_NS: u64 = 50_000;
const SYSV_MAX_NS: u64 = 5_000_000;

const VALUE_MASK: u64 = 0xffff_ffff;
const NWAITER: u64 = 1 << 32;
const TID_MASK: u32 = 0x3fff_ffff;

struct Waiter {
    /// The async handle it belongs to (see [`Helper::forget_owner`]).
    owner: u64,
    watch: Watch,
    waker: Waker,
    /// Woken and not yet back (a task polls, then takes or watches again).
    notified: bool,
    /// Woken without knowing whether it can go on (a System V value it may not read, a word
    /// of unknown layout): watching again backs off instead of looking again at once.
    blind: bool,
    /// What is looked at rather than slept on (System V, unknown layouts): the interval
    /// between looks and the next look (ns of `CLOCK_MONOTONIC`).
    interval: u64,
    due: u64,
}

/// A lock operation for the thread to perform on a mutex ([`Helper::call`]).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Op {
    /// A lock attempt that does not wait.
    TryLock,
    /// `pthread_mutex_unlock`.
    Unlock,
    /// `pthread_mutex_consistent`.
    MakeConsistent,
}

struct Call {
    op: Op,
    /// Taken by the thread that performs the call, and dropped before it answers: the caller
    /// then holds the only other reference, so the handle's drop stays on the caller's side.
    target: Mutex<Option<Arc<dyn MutexTarget>>>,
    done: AtomicU32,
    rc: AtomicI32,
}

impl Call {
    /// Performs the call on this thread and answers it.
    fn run(&self) {
        let target = lock(&self.target).take();
        let rc = match &target {
            Some(t) => exec(self.op, t.robust()),
            None => libc::EIO,
        };
        drop(target);
        self.finish(rc);
    }

    fn finish(&self, rc: i32) {
        self.rc.store(rc, Ordering::Relaxed);
        self.done.store(1, Ordering::Release);
        let _ = futex::wake(&self.done, futex::Flags::PRIVATE, 1);
    }
}

fn exec(op: Op, m: &RobustMutex) -> i32 {
    match op {
        Op::TryLock => {
            let rc = m.raw_try_lock();
            if rc == 0 || rc == libc::EOWNERDEAD {
                // A lock taken by a woken waiter may leave others asleep behind it (the unlock
                // that woke this thread woke only one). glibc's `pthread_mutex_lock` takes the
                // lock with `FUTEX_WAITERS` then, so that its unlock wakes the next; the
                // non-blocking attempt does not know it was woken: set the bit here, always.
                // (The unlock then makes one `futex` call that may wake nobody.)
                if let Some(w) = m.lock_word() {
                    w.fetch_or(futex::WAITERS, Ordering::SeqCst);
                }
            }
            rc
        }
        Op::Unlock => m.raw_unlock(),
        Op::MakeConsistent => m.raw_make_consistent(),
    }
}

#[derive(Default)]
struct State {
    /// By id, so in order of registration (ids only grow).
    waiters: BTreeMap<u64, Waiter>,
    calls: Vec<Arc<Call>>,
    next_id: u64,
    /// Where the list of words starts when there are more than `futex_waitv` takes.
    rotate: usize,
    /// `futex_waitv` is missing (`ENOSYS`, Linux before 5.16): look every millisecond.
    polling: bool,
}

/// The process's waiter thread and what it watches.
pub(crate) struct Helper {
    pid: u32,
    /// Rung (incremented, then woken) by every change the thread must look at.
    doorbell: AtomicU32,
    alive: AtomicBool,
    state: Mutex<State>,
}

static CURRENT: Mutex<Option<Arc<Helper>>> = Mutex::new(None);
/// The pid of the process whose thread `CURRENT` holds (0: none). Read without a lock, so that
/// a forked child, whose parent's other threads may have held `CURRENT`, never takes it.
static CURRENT_PID: AtomicU32 = AtomicU32::new(0);
static NEXT_OWNER: AtomicU64 = AtomicU64::new(1);

thread_local! {
    static ON_HELPER: Cell<bool> = const { Cell::new(false) };
}

/// A number that names one async handle among the waiters.
pub(crate) fn owner_token() -> u64 {
    NEXT_OWNER.fetch_add(1, Ordering::Relaxed)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn now_ns() -> u64 {
    let t = rustix::time::clock_gettime(ClockId::Monotonic);
    u64::try_from(t.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(t.tv_nsec).unwrap_or(0)
}

fn timespec(ns: u64) -> Timespec {
    Timespec {
        tv_sec: i64::try_from(ns / 1_000_000_000).unwrap_or(i64::MAX),
        tv_nsec: (ns % 1_000_000_000) as i64,
    }
}

/// The next point of the grid of `interval` after `now`.
fn grid(now: u64, interval: u64) -> u64 {
    (now / interval + 1).saturating_mul(interval)
}

fn earliest(deadline: &mut Option<u64>, t: u64) {
    *deadline = Some(deadline.map_or(t, |d| d.min(t)));
}

fn wait_entry(addr: *mut u32, val: u32, flags: futex::WaitFlags) -> futex::Wait {
    let mut w = futex::Wait::new();
    w.val = u64::from(val);
    w.uaddr = futex::WaitPtr::new(addr.cast());
    w.flags = flags | futex::WaitFlags::SIZE_U32;
    w
}

/// What a watched word says.
enum Seen {
    /// This many units (a free mutex: one).
    Units(u64),
    /// Nothing: sleep on this word while it holds this value.
    Sleep(*mut u32, u32),
    /// Nothing, and no futex to sleep on: look again soon.
    Poll,
}

impl Watch {
    /// The address that identifies the watched word (waiters on one word are served together).
    fn word(&self) -> Option<usize> {
        match self {
            Watch::Sem(t) => Some(t.sem_cell().value_word() as usize),
            Watch::Mutex(t) => Some(match t.robust().lock_word() {
                Some(w) => w.as_ptr() as usize,
                None => t.robust() as *const RobustMutex as usize,
            }),
            Watch::Sysv { .. } => None,
        }
    }

    fn look(&self) -> Seen {
        match self {
            Watch::Sem(t) => {
                let cell = t.sem_cell();
                match cell.data() {
                    Some(d) => match d.load(Ordering::SeqCst) & VALUE_MASK {
                        0 => Seen::Sleep(cell.value_word(), 0),
                        v => Seen::Units(v),
                    },
                    None => match cell.value() {
                        Ok(v) if v > 0 => Seen::Units(v as u64),
                        Ok(_) => Seen::Poll,
                        // Let the task find out what is wrong.
                        Err(_) => Seen::Units(1),
                    },
                }
            }
            Watch::Mutex(t) => {
                let Some(word) = t.robust().lock_word() else {
                    return Seen::Poll;
                };
                let mut w = word.load(Ordering::SeqCst);
                loop {
                    if w & TID_MASK == 0 {
                        // Free, or its holder died (`FUTEX_OWNER_DIED`): one may take it.
                        return Seen::Units(1);
                    }
                    let want = w | futex::WAITERS;
                    if w == want {
                        return Seen::Sleep(word.as_ptr(), want);
                    }
                    // As a blocked `pthread_mutex_lock` does: the holder's unlock (or the
                    // kernel, if it dies) wakes a waiter only if this bit is set.
                    match word.compare_exchange(w, want, Ordering::SeqCst, Ordering::SeqCst) {
                        Ok(_) => return Seen::Sleep(word.as_ptr(), want),
                        Err(now) => w = now,
                    }
                }
            }
            Watch::Sysv { .. } => Seen::Poll,
        }
    }

    /// A waiter whose task gives up without taking anything (dropped, failed, forgotten):
    /// unregisters it, passing on a wake-up it may have used up.
    fn give_up(&self) {
        match self {
            Watch::Sem(t) => {
                let offers = match self.count_waiter(false) {
                    Some(d) => d & VALUE_MASK != 0,
                    None => t.sem_cell().value().is_ok_and(|v| v > 0),
                };
                if offers {
                    self.pass_on();
                }
            }
            Watch::Mutex(_) => self.pass_on(),
            Watch::Sysv { .. } => {}
        }
    }

    /// Does for a sleeper in another process what a woken waiter that gives up owes it, in
    /// case this thread used up the wake-up meant for it: a semaphore's unit, or a free mutex,
    /// gets one futex waiter woken; a mutex held again gets `FUTEX_WAITERS` (its holder may have
    /// taken it without, and would then wake nobody when it unlocks).
    fn pass_on(&self) {
        match self {
            Watch::Sem(t) => t.sem_cell().wake_one(),
            Watch::Mutex(t) => {
                let Some(word) = t.robust().lock_word() else {
                    return;
                };
                let mut w = word.load(Ordering::SeqCst);
                loop {
                    if w & TID_MASK == 0 {
                        let _ = futex::wake(word, futex::Flags::empty(), 1);
                        return;
                    }
                    if w & futex::WAITERS != 0 {
                        return;
                    }
                    match word.compare_exchange(
                        w,
                        w | futex::WAITERS,
                        Ordering::SeqCst,
                        Ordering::SeqCst,
                    ) {
                        Ok(_) => return,
                        Err(now) => w = now,
                    }
                }
            }
            Watch::Sysv { .. } => {}
        }
    }

    /// Registers (`add`) or unregisters one waiter in glibc's `nwaiters`; the word before.
    fn count_waiter(&self, add: bool) -> Option<u64> {
        let Watch::Sem(t) = self else { return None };
        let d = t.sem_cell().data()?;
        Some(if add {
            d.fetch_add(NWAITER, Ordering::SeqCst)
        } else {
            d.fetch_sub(NWAITER, Ordering::SeqCst)
        })
    }
}

/// What a look at a System V set says about a wait's operations.
enum Would {
    Apply,
    Block,
    /// A value could not be read (no read permission, or the set is gone): the task's own
    /// attempt finds out.
    Unknown,
}

/// Whether `ops` would go through on the values in `cache` (filled with `semctl(GETVAL)` as
/// needed), and if so, applies them there.
fn sysv_would_apply(id: i32, ops: &[(u16, i16)], cache: &mut Vec<(i32, u16, i32)>) -> Would {
    let mut next: Vec<(u16, i32)> = Vec::with_capacity(ops.len());
    for &(index, delta) in ops {
        let cur = match next.iter().find(|(i, _)| *i == index) {
            Some(&(_, v)) => v,
            None => match cache.iter().find(|(s, i, _)| *s == id && *i == index) {
                Some(&(_, _, v)) => v,
                None => match crate::sys::semctl_get(id, i32::from(index), libc::GETVAL) {
                    Ok(v) => {
                        cache.push((id, index, v));
                        v
                    }
                    Err(_) => return Would::Unknown,
                },
            },
        };
        let new = if delta == 0 {
            if cur != 0 {
                return Would::Block;
            }
            cur
        } else {
            let n = cur + i32::from(delta);
            if n < 0 {
                return Would::Block;
            }
            n
        };
        match next.iter_mut().find(|(i, _)| *i == index) {
            Some(e) => e.1 = new,
            None => next.push((index, new)),
        }
    }
    for (index, v) in next {
        if let Some(e) = cache.iter_mut().find(|(s, i, _)| *s == id && *i == index) {
            e.2 = v;
        }
    }
    Would::Apply
}

impl State {
    /// Looks at every watched word: wakes the tasks that can go on, lists the words to sleep
    /// on (the doorbell first), and returns when to look again at the latest.
    fn scan(
        &mut self,
        now: u64,
        doorbell: futex::Wait,
        words: &mut Vec<futex::Wait>,
        wake: &mut Vec<Waker>,
    ) -> Option<u64> {
        words.clear();
        words.push(doorbell);
        let mut deadline = None;
        // Futex words, one group per word, in order of first registration.
        let mut groups: Vec<Vec<u64>> = Vec::new();
        let mut group_of: HashMap<usize, usize> = HashMap::new();
        for (&id, w) in &self.waiters {
            if w.notified {
                continue;
            }
            if let Some(word) = w.watch.word() {
                let g = *group_of.entry(word).or_insert_with(|| {
                    groups.push(Vec::new());
                    groups.len() - 1
                });
                groups[g].push(id);
            }
        }
        let mut sleep = Vec::new();
        for members in &groups {
            let Some(first) = members.first().and_then(|id| self.waiters.get(id)) else {
                continue;
            };
            let seen = first.watch.look();
            if let Seen::Poll = seen {
                // No futex to sleep on and nothing seen: the tasks look themselves, once a
                // millisecond.
                for id in members {
                    let Some(w) = self.waiters.get_mut(id) else {
                        continue;
                    };
                    if w.due > now {
                        earliest(&mut deadline, w.due);
                    } else {
                        w.notified = true;
                        w.blind = true;
                        wake.push(w.waker.clone());
                    }
                }
                continue;
            }
            match seen {
                Seen::Units(n) => {
                    let n = usize::try_from(n).unwrap_or(usize::MAX);
                    for id in members.iter().take(n) {
                        let Some(w) = self.waiters.get_mut(id) else {
                            continue;
                        };
                        w.notified = true;
                        wake.push(w.waker.clone());
                    }
                    if members.len() > n {
                        earliest(&mut deadline, now + RECHECK_NS);
                    }
                }
                Seen::Sleep(addr, val) => {
                    sleep.push(wait_entry(addr, val, futex::WaitFlags::empty()))
                }
                Seen::Poll => earliest(&mut deadline, now + RECHECK_NS),
            }
        }
        if self.polling {
            if !sleep.is_empty() {
                earliest(&mut deadline, now + RECHECK_NS);
            }
        } else if sleep.len() > WAITV_MAX - 1 {
            // More words than one futex_waitv takes: a different slice each round, and a look
            // at all of them every millisecond.
            let start = self.rotate % sleep.len();
            self.rotate = self.rotate.wrapping_add(WAITV_MAX - 1);
            words.extend(
                sleep
                    .iter()
                    .cycle()
                    .skip(start)
                    .take(WAITV_MAX - 1)
                    .copied(),
            );
            earliest(&mut deadline, now + RECHECK_NS);
        } else {
            words.extend(sleep);
        }
        // System V sets: a look when due.
        let mut cache = Vec::new();
        for w in self.waiters.values_mut() {
            let Watch::Sysv { id, ops } = &w.watch else {
                continue;
            };
            if w.notified {
                continue;
            }
            if w.due > now {
                earliest(&mut deadline, w.due);
                continue;
            }
            match sysv_would_apply(*id, ops, &mut cache) {
                Would::Apply => {
                    w.notified = true;
                    wake.push(w.waker.clone());
                }
                Would::Unknown => {
                    w.notified = true;
                    w.blind = true;
                    wake.push(w.waker.clone());
                }
                Would::Block => {
                    w.interval = (w.interval * 2).min(SYSV_MAX_NS);
                    w.due = grid(now, w.interval);
                    earliest(&mut deadline, w.due);
                }
            }
        }
        deadline
    }
}

/// Marks the thread dead if it ever unwinds, and answers the requests left.
struct AliveGuard<'a>(&'a Helper);

impl Drop for AliveGuard<'_> {
    fn drop(&mut self) {
        self.0.alive.store(false, Ordering::SeqCst);
        let calls = std::mem::take(&mut lock(&self.0.state).calls);
        for c in calls {
            drop(lock(&c.target).take());
            c.finish(libc::EIO);
        }
        // The tasks find the thread dead, and register with a new one.
        let waiters = std::mem::take(&mut lock(&self.0.state).waiters);
        for w in waiters.values() {
            w.watch.count_waiter(false);
            w.waker.wake_by_ref();
        }
    }
}

impl Helper {
    /// The process's waiter thread, started if there is none yet.
    ///
    /// # Errors
    /// What `pthread_create` fails with (`EAGAIN`: out of threads or memory).
    pub(crate) fn get() -> Result<Arc<Helper>> {
        let pid = std::process::id();
        let mut current = lock(&CURRENT);
        if let Some(h) = &*current {
            if h.pid == pid && h.alive.load(Ordering::SeqCst) {
                return Ok(h.clone());
            }
        }
        let h = Arc::new(Helper {
            pid,
            doorbell: AtomicU32::new(0),
            alive: AtomicBool::new(true),
            state: Mutex::new(State::default()),
        });
        let run = h.clone();
        std::thread::Builder::new()
            .name("ipc-sem-waiter".into())
            .spawn(move || run.run())
            .map_err(Error::Io)?;
        *current = Some(h.clone());
        CURRENT_PID.store(pid, Ordering::SeqCst);
        Ok(h)
    }

    /// The process's waiter thread if it has one, without starting one; `None` in a forked
    /// child (without taking any lock there).
    pub(crate) fn existing() -> Option<Arc<Helper>> {
        if CURRENT_PID.load(Ordering::SeqCst) != std::process::id() {
            return None;
        }
        lock(&CURRENT).clone()
    }

    /// Whether the thread still runs (it never ends, unless a bug made it unwind).
    pub(crate) fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    /// Whether this is the thread of this process (false in a forked child).
    fn ours(&self) -> bool {
        self.pid == std::process::id()
    }

    fn ring(&self) {
        self.doorbell.fetch_add(1, Ordering::SeqCst);
        let _ = futex::wake(&self.doorbell, futex::Flags::PRIVATE, 1);
    }

    /// Starts watching for a task; returns the waiter's id.
    pub(crate) fn register(&self, owner: u64, watch: Watch, waker: &Waker) -> u64 {
        let now = now_ns();
        let mut st = lock(&self.state);
        watch.count_waiter(true);
        let id = st.next_id;
        st.next_id += 1;
        st.waiters.insert(
            id,
            Waiter {
                owner,
                watch,
                waker: waker.clone(),
                notified: false,
                blind: false,
                interval: SYSV_FIRST_NS,
                due: grid(now, SYSV_FIRST_NS),
            },
        );
        drop(st);
        self.ring();
        id
    }

    /// Whether the waiter was woken and has not been rearmed since. Updates its waker.
    pub(crate) fn notified(&self, id: u64, waker: &Waker) -> bool {
        let mut st = lock(&self.state);
        match st.waiters.get_mut(&id) {
            Some(w) => {
                if !w.waker.will_wake(waker) {
                    w.waker = waker.clone();
                }
                w.notified
            }
            None => false,
        }
    }

    /// The task tried and must wait again: watch again (with `waker`).
    pub(crate) fn rearm(&self, id: u64, waker: &Waker) {
        let now = now_ns();
        let mut st = lock(&self.state);
        let mut ring = false;
        if let Some(w) = st.waiters.get_mut(&id) {
            if !w.waker.will_wake(waker) {
                w.waker = waker.clone();
            }
            if w.notified {
                // A look said go, and another process was faster: look again soon. A blind
                // wake-up found nothing: back off.
                w.interval = if w.blind {
                    (w.interval * 2).min(SYSV_MAX_NS)
                } else {
                    SYSV_FIRST_NS
                };
                if matches!(w.watch, Watch::Sem(_) | Watch::Mutex(_)) && w.blind {
                    w.interval = RECHECK_NS;
                }
                w.notified = false;
                w.blind = false;
                w.due = grid(now, w.interval);
                ring = true;
            }
        }
        drop(st);
        if ring {
            self.ring();
        }
    }

    /// The waiter is done: its task took what it waited for (`took`), or gave up (dropped,
    /// or failed), in which case a wake-up it may have used up is passed on.
    pub(crate) fn remove(&self, id: u64, took: bool) {
        if !self.ours() {
            return;
        }
        let mut st = lock(&self.state);
        let Some(w) = st.waiters.remove(&id) else {
            return;
        };
        if !took {
            w.watch.give_up();
        } else {
            w.watch.count_waiter(false);
        }
        drop(st);
        self.ring();
        // The entry's `Arc` (the word's memory) goes only now, after the ring.
        drop(w);
    }

    /// Removes every waiter of an async handle that is being dropped (those of futures that
    /// were forgotten rather than dropped), as [`remove`](Self::remove) without `took`.
    pub(crate) fn forget_owner(&self, owner: u64) {
        if !self.ours() {
            return;
        }
        let mut st = lock(&self.state);
        let ids: Vec<u64> = st
            .waiters
            .iter()
            .filter(|(_, w)| w.owner == owner)
            .map(|(&id, _)| id)
            .collect();
        let gone: Vec<Waiter> = ids.iter().filter_map(|id| st.waiters.remove(id)).collect();
        if gone.is_empty() {
            return;
        }
        for w in &gone {
            w.watch.give_up();
        }
        drop(st);
        self.ring();
        drop(gone);
    }

    /// Has the waiter thread perform `op` on `target` and returns its result code (0, or an
    /// errno value: `EBUSY`, `EDEADLK`, `EOWNERDEAD`, ...). The calling thread waits for it;
    /// on the waiter thread itself (a waker that polls inline) it is done at once.
    pub(crate) fn call(&self, op: Op, target: &Arc<dyn MutexTarget>) -> i32 {
        if ON_HELPER.with(Cell::get) {
            return exec(op, target.robust());
        }
        if !self.ours() {
            return libc::EPERM;
        }
        let call = Arc::new(Call {
            op,
            target: Mutex::new(Some(target.clone())),
            done: AtomicU32::new(0),
            rc: AtomicI32::new(0),
        });
        lock(&self.state).calls.push(call.clone());
        self.ring();
        let slice = timespec(100_000_000);
        loop {
            if call.done.load(Ordering::Acquire) != 0 {
                return call.rc.load(Ordering::Relaxed);
            }
            if !self.alive.load(Ordering::SeqCst) {
                // Answered by `AliveGuard`, or never will be.
                if call.done.load(Ordering::Acquire) != 0 {
                    return call.rc.load(Ordering::Relaxed);
                }
                return libc::EIO;
            }
            let _ = futex::wait(&call.done, futex::Flags::PRIVATE, 0, Some(&slice));
        }
    }

    fn run(self: Arc<Self>) {
        ON_HELPER.with(|h| h.set(true));
        crate::sys::block_signals();
        // Looks at System V sets come when due, not up to 50 µs late.
        let _ = rustix::thread::set_current_timer_slack(NonZeroU64::new(1));
        let _alive = AliveGuard(&self);
        let mut words = Vec::with_capacity(WAITV_MAX);
        let mut wake = Vec::new();
        loop {
            let seq = self.doorbell.load(Ordering::SeqCst);
            let calls = std::mem::take(&mut lock(&self.state).calls);
            for c in calls {
                c.run();
            }
            let now = now_ns();
            let doorbell = wait_entry(self.doorbell.as_ptr(), seq, futex::WaitFlags::PRIVATE);
            let (deadline, polling) = {
                let mut st = lock(&self.state);
                let d = st.scan(now, doorbell, &mut words, &mut wake);
                (d, st.polling)
            };
            for w in wake.drain(..) {
                w.wake();
            }
            if polling {
                self.nap(seq, deadline, now);
                continue;
            }
            let at = deadline.map(timespec);
            match futex::waitv(
                &words,
                futex::WaitvFlags::empty(),
                at.as_ref(),
                ClockId::Monotonic,
            ) {
                Ok(_) | Err(Errno::AGAIN | Errno::TIMEDOUT | Errno::INTR) => {}
                Err(Errno::NOSYS) => lock(&self.state).polling = true,
                // EFAULT (a stale address, see the module docs), ENOMEM, EINVAL: never spin,
                // look again after a short nap on the doorbell.
                Err(_) => self.nap(seq, Some(now + RECHECK_NS), now),
            }
        }
    }

    /// Sleeps on the doorbell alone, until `deadline` but at most a millisecond.
    fn nap(&self, seq: u32, deadline: Option<u64>, now: u64) {
        let until = deadline.map_or(now + RECHECK_NS, |d| d.min(now + RECHECK_NS));
        let left = timespec(until.saturating_sub(now_ns()).max(1));
        let _ = futex::wait(&self.doorbell, futex::Flags::PRIVATE, seq, Some(&left));
    }
}
