//! The one helper thread that serves every pending System V wait of the process.
//!
//! System V queues have no descriptor to poll. A future that finds its queue empty (or full)
//! registers here; the helper thread looks at the queue (`msgctl(IPC_STAT)`: its message count,
//! its bytes) on a backoff schedule — 50 µs after the registration, then twice as long each time,
//! up to 5 ms, and from then on at the ticks of one 5 ms grid that all such waits share — and
//! wakes the future only when the queue's state says that its try can succeed. The future then
//! tries again itself, in its own `poll`.
//!
//! The helper never takes a message out of a queue, nor puts one in: a message leaves the kernel
//! only in the `poll` of a live future, which returns it in that same `poll`. So a future that is
//! dropped — woken or not — leaves every message where it was: nobody ever holds a message on
//! behalf of a future that is gone.
//!
//! The thread starts with the first wait that has to wait, and then stays, sleeping on a condition
//! variable while nothing waits.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::sys;

/// The first look at a queue comes this long after the registration.
pub(crate) const FIRST_NAP: Duration = Duration::from_micros(50);
/// The longest time between two looks at a queue.
pub(crate) const MAX_NAP: Duration = Duration::from_millis(5);

/// The name of the helper thread (as `/proc/self/task/*/comm` shows it).
pub(crate) const THREAD_NAME: &str = "ipc-mq-sysv";

/// What a wait needs of its queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    /// A message (of any type: the helper cannot see types; the future's try picks).
    Message,
    /// Room for a message of this many bytes.
    Room(usize),
}

#[derive(Debug)]
struct Entry {
    id: i32,
    need: Need,
    /// When the helper looks next.
    due: Instant,
    /// The time between looks, doubling up to [`MAX_NAP`].
    nap: Duration,
    waker: Waker,
    /// The queue looked ready: the future has been woken to try.
    fired: bool,
}

impl Entry {
    /// When the helper may look, at the earliest: up to a quarter of the nap before `due`, so
    /// that the looks of many waits fall together into fewer rounds (a round starts when the
    /// first wait is due).
    fn early(&self) -> Instant {
        self.due.checked_sub(self.nap / 4).unwrap_or(self.due)
    }
}

#[derive(Debug, Default)]
struct State {
    entries: HashMap<u64, Entry>,
    next_key: u64,
    /// The helper is looking at queues (it looks at the table again before it sleeps).
    busy: bool,
    /// When the sleeping helper wakes up by itself (`None`: only when notified).
    wake_at: Option<Instant>,
}

#[derive(Debug)]
struct Helper {
    /// The grid that waits at the longest interval share: every [`MAX_NAP`] from here.
    epoch: Instant,
    /// The process the thread runs in (a forked child has the memory, not the thread).
    pid: u32,
    state: Mutex<State>,
    cv: Condvar,
}

static HELPER: OnceLock<Arc<Helper>> = OnceLock::new();
static START: Mutex<()> = Mutex::new(());

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The process's helper, started on first use.
fn helper() -> io::Result<&'static Helper> {
    let started = match HELPER.get() {
        Some(h) => h,
        None => {
            let _once = lock(&START);
            match HELPER.get() {
                Some(h) => h,
                None => {
                    let h = Arc::new(Helper {
                        epoch: Instant::now(),
                        pid: std::process::id(),
                        state: Mutex::new(State::default()),
                        cv: Condvar::new(),
                    });
                    let worker = Arc::clone(&h);
                    std::thread::Builder::new()
                        .name(THREAD_NAME.into())
                        .spawn(move || worker.run())
                        .map_err(|e| {
                            io::Error::new(
                                e.kind(),
                                format!("cannot start the System V wait helper thread: {e}"),
                            )
                        })?;
                    HELPER.get_or_init(|| h)
                }
            }
        }
    };
    if started.pid != std::process::id() {
        return Err(io::Error::other(
            "System V async waits are not available in a forked child: the helper thread is \
             the parent's (exec, or create the runtime and queues after fork)",
        ));
    }
    Ok(started)
}

impl Helper {
    /// When a wait with interval `nap` is looked at next: `nap` from now, except that waits at
    /// the longest interval are looked at on one grid, so that however many there are, they
    /// share one wake-up every [`MAX_NAP`].
    fn due_after(&self, now: Instant, nap: Duration) -> Instant {
        if nap < MAX_NAP {
            return now + nap;
        }
        let step = MAX_NAP.as_nanos();
        let ticks = now.saturating_duration_since(self.epoch).as_nanos() / step + 1;
        let at = u64::try_from(ticks.saturating_mul(step)).unwrap_or(u64::MAX);
        self.epoch + Duration::from_nanos(at)
    }

    fn run(&self) {
        // The looks are timed in tens of microseconds: without this, the kernel may defer each
        // wake-up of this thread by its timer slack (50 µs by default). This thread only.
        let _ = rustix::thread::set_current_timer_slack(std::num::NonZeroU64::new(1_000));
        let mut st = lock(&self.state);
        loop {
            // Sleep until the first due look; then make every look due by then or soon after
            // (within a quarter of its nap), so that many waits share rounds.
            let next = st
                .entries
                .values()
                .filter(|e| !e.fired)
                .map(|e| e.due)
                .min();
            let now = Instant::now();
            match next {
                None => {
                    st.wake_at = None;
                    st = self.cv.wait(st).unwrap_or_else(PoisonError::into_inner);
                    continue;
                }
                Some(t) if t > now => {
                    st.wake_at = Some(t);
                    st = self
                        .cv
                        .wait_timeout(st, t - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                    continue;
                }
                Some(_) => {}
            }
            st.busy = true;
            st.wake_at = None;
            let due: Vec<(u64, i32, Need)> = st
                .entries
                .iter()
                .filter(|(_, e)| !e.fired && e.early() <= now)
                .map(|(&k, e)| (k, e.id, e.need))
                .collect();
            drop(st);

            // Look at each queue once, without the lock: registrations and drops go on meanwhile.
            let mut looks: HashMap<i32, Look> = HashMap::new();
            for &(_, id, _) in &due {
                looks.entry(id).or_insert_with(|| look(id));
            }

            st = lock(&self.state);
            let now = Instant::now();
            let mut wake = Vec::new();
            for (key, id, need) in due {
                // A wait dropped meanwhile is gone from the table: nothing to do for it.
                let Some(e) = st.entries.get_mut(&key) else {
                    continue;
                };
                if looks.get(&id).is_none_or(|l| l.may_succeed(need)) {
                    e.fired = true;
                    wake.push(e.waker.clone());
                } else {
                    e.nap = (e.nap * 2).min(MAX_NAP);
                    e.due = self.due_after(now, e.nap);
                }
            }
            st.busy = false;
            if !wake.is_empty() {
                // Wakers run the executor's code: never under the lock.
                drop(st);
                for w in wake {
                    w.wake();
                }
                st = lock(&self.state);
            }
        }
    }
}

/// What `IPC_STAT` said of a queue.
#[derive(Debug, Clone, Copy)]
enum Look {
    /// Its counters.
    Counts { qnum: u64, cbytes: u64, qbytes: u64 },
    /// The call failed (no read permission, the queue is gone, ...): let the future try, which
    /// finds out what it means.
    Unknown,
}

fn look(id: i32) -> Look {
    match sys::msgctl_stat(id) {
        Ok(ds) => Look::Counts {
            qnum: ds.msg_qnum,
            cbytes: ds.__msg_cbytes,
            qbytes: ds.msg_qbytes,
        },
        Err(_) => Look::Unknown,
    }
}

impl Look {
    /// Whether a try of `need` can succeed now (never false when it can).
    fn may_succeed(self, need: Need) -> bool {
        match self {
            Look::Unknown => true,
            Look::Counts { qnum, .. } if need == Need::Message => qnum > 0,
            Look::Counts {
                qnum,
                cbytes,
                qbytes,
            } => {
                // The kernel's test (msg_fits_inqueue): the bytes, and one more message, fit.
                let Need::Room(len) = need else { return true };
                let len = u64::try_from(len).unwrap_or(u64::MAX);
                len.saturating_add(cbytes) <= qbytes && qnum.saturating_add(1) <= qbytes
            }
        }
    }
}

/// One future's registration with the helper: made when the future has to wait, removed when it
/// is woken or dropped.
#[derive(Debug)]
pub(crate) struct Waiter {
    key: Option<u64>,
    /// The nap to register with next: a wait that was woken but whose try failed (the message
    /// was another type's, or another receiver's) goes on from where it was.
    nap: Duration,
}

impl Waiter {
    pub(crate) const fn new() -> Waiter {
        Waiter {
            key: None,
            nap: FIRST_NAP,
        }
    }

    /// Waits until the helper finds that queue `id` may satisfy `need`.
    pub(crate) fn poll_wait(
        &mut self,
        cx: &mut Context<'_>,
        id: i32,
        need: Need,
    ) -> Poll<io::Result<()>> {
        let h = match helper() {
            Ok(h) => h,
            Err(e) => return Poll::Ready(Err(e)),
        };
        let mut st = lock(&h.state);
        if let Some(key) = self.key {
            match st.entries.get_mut(&key) {
                Some(e) if e.fired => {
                    self.nap = e.nap;
                    st.entries.remove(&key);
                    self.key = None;
                    return Poll::Ready(Ok(()));
                }
                Some(e) => {
                    if !e.waker.will_wake(cx.waker()) {
                        e.waker = cx.waker().clone();
                    }
                    return Poll::Pending;
                }
                None => self.key = None,
            }
        }
        let key = st.next_key;
        st.next_key = st.next_key.wrapping_add(1);
        let e = Entry {
            id,
            need,
            due: h.due_after(Instant::now(), self.nap),
            nap: self.nap,
            waker: cx.waker().clone(),
            fired: false,
        };
        let due = e.due;
        st.entries.insert(key, e);
        self.key = Some(key);
        // The helper looks at the table before it sleeps again; a sleeping one is woken only if
        // this wait is due before it would wake by itself.
        if !st.busy && st.wake_at.is_none_or(|t| due < t) {
            h.cv.notify_one();
        }
        Poll::Pending
    }

    /// Waits until the helper finds that queue `id` may satisfy `need`.
    pub(crate) async fn wait(&mut self, id: i32, need: Need) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_wait(cx, id, need)).await
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        if let (Some(key), Some(h)) = (self.key, HELPER.get()) {
            if h.pid == std::process::id() {
                lock(&h.state).entries.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;
    use std::task::Wake;

    /// How many waits are registered with the helper now.
    fn pending() -> usize {
        HELPER.get().map_or(0, |h| lock(&h.state).entries.len())
    }

    /// A waker that counts its wakes and reports each on a channel.
    struct Counter(AtomicUsize, Mutex<mpsc::Sender<()>>);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
            let _ = lock(&self.1).send(());
        }
    }

    fn counter() -> (Arc<Counter>, mpsc::Receiver<()>) {
        let (tx, rx) = mpsc::channel();
        (Arc::new(Counter(AtomicUsize::new(0), Mutex::new(tx))), rx)
    }

    /// A private queue, removed when dropped.
    struct Queue(i32);

    impl Drop for Queue {
        fn drop(&mut self) {
            let _ = sys::msgctl_rmid(self.0);
        }
    }

    fn private_queue() -> Queue {
        Queue(sys::msgget(libc::IPC_PRIVATE, libc::IPC_CREAT | 0o600).expect("msgget"))
    }

    fn send(id: i32, text: &[u8]) {
        sys::msgsnd_parts(id, 1, text, libc::IPC_NOWAIT).expect("msgsnd");
    }

    // One test, so that no other test of this binary registers waits meanwhile.
    #[test]
    fn the_helper_wakes_only_for_a_ready_queue_and_forgets_dropped_waits() {
        let q = private_queue();
        let id = q.0;
        let (c, woken) = counter();
        let waker = Waker::from(Arc::clone(&c));
        let mut cx = Context::from_waker(&waker);

        // An empty queue: registered, not woken while it stays empty.
        let mut w = Waiter::new();
        assert!(w.poll_wait(&mut cx, id, Need::Message).is_pending());
        assert_eq!(pending(), 1);
        assert!(woken.recv_timeout(Duration::from_millis(100)).is_err());
        assert_eq!(c.0.load(Ordering::SeqCst), 0);

        // A message: woken (the helper only looked), and the message is still there.
        send(id, b"x");
        woken.recv_timeout(Duration::from_secs(30)).expect("woken");
        assert_eq!(sys::msgctl_stat(id).expect("stat").msg_qnum, 1);
        assert!(w.poll_wait(&mut cx, id, Need::Message).is_ready());
        assert_eq!(pending(), 0);

        // Dropped while registered (woken or not): the registration goes with it.
        let mut w = Waiter::new();
        assert!(w.poll_wait(&mut cx, id, Need::Room(1 << 20)).is_pending());
        assert_eq!(pending(), 1);
        drop(w);
        assert_eq!(pending(), 0);
        let mut w = Waiter::new();
        assert!(w.poll_wait(&mut cx, id, Need::Message).is_pending());
        woken.recv_timeout(Duration::from_secs(30)).expect("woken");
        drop(w);
        assert_eq!(pending(), 0);
        assert_eq!(sys::msgctl_stat(id).expect("stat").msg_qnum, 1);

        // Room: a message that fits wakes at once; a removed queue wakes its waiter too.
        let mut w = Waiter::new();
        assert!(w.poll_wait(&mut cx, id, Need::Room(16)).is_pending());
        woken.recv_timeout(Duration::from_secs(30)).expect("woken");
        assert!(w.poll_wait(&mut cx, id, Need::Room(16)).is_ready());
        let before = c.0.load(Ordering::SeqCst);
        let mut w = Waiter::new();
        assert!(w.poll_wait(&mut cx, id, Need::Room(1 << 20)).is_pending());
        assert!(woken.recv_timeout(Duration::from_millis(100)).is_err());
        assert_eq!(c.0.load(Ordering::SeqCst), before);
        sys::msgctl_rmid(id).expect("rmid");
        woken
            .recv_timeout(Duration::from_secs(30))
            .expect("woken by removal");
        assert!(w.poll_wait(&mut cx, id, Need::Room(1 << 20)).is_ready());
        assert_eq!(pending(), 0);
    }

    #[test]
    fn waits_at_the_longest_interval_share_one_grid() {
        let h = Helper {
            epoch: Instant::now(),
            pid: std::process::id(),
            state: Mutex::new(State::default()),
            cv: Condvar::new(),
        };
        let now = Instant::now();
        assert_eq!(h.due_after(now, FIRST_NAP), now + FIRST_NAP);
        let a = h.due_after(now, MAX_NAP);
        assert!(a > now && a <= now + MAX_NAP);
        assert_eq!(
            (a - h.epoch).as_nanos() % MAX_NAP.as_nanos(),
            0,
            "on the grid"
        );
        // Any moment in the same slot gives the same look; the next slot the next one.
        assert_eq!(h.due_after(a - Duration::from_nanos(1), MAX_NAP), a);
        assert_eq!(h.due_after(a, MAX_NAP), a + MAX_NAP);
    }

    #[test]
    fn looks_say_ready_exactly_as_the_kernel_would() {
        let l = Look::Counts {
            qnum: 0,
            cbytes: 0,
            qbytes: 16,
        };
        assert!(!l.may_succeed(Need::Message));
        assert!(l.may_succeed(Need::Room(16)));
        assert!(!l.may_succeed(Need::Room(17)));
        let full = Look::Counts {
            qnum: 16,
            cbytes: 0,
            qbytes: 16,
        };
        assert!(full.may_succeed(Need::Message));
        assert!(
            !full.may_succeed(Need::Room(0)),
            "one more message must fit too"
        );
        assert!(Look::Unknown.may_succeed(Need::Message));
        assert!(Look::Unknown.may_succeed(Need::Room(usize::MAX)));
    }
}
