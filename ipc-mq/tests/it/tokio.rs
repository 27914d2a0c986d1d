//! The `tokio` feature: async send and receive across real processes, cancellation at chosen
//! moments, and the cost of a System V wait.
#![cfg(feature = "tokio")]

use std::future::Future;
use std::os::fd::AsFd;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use ipc_mq::{
    Access, AsyncMessageQueue, AsyncSysvQueue, Error, Key, MessageQueue, OnDrop, Select,
    SysvMessage, SysvQueue,
};
use ipc_testkit::{Proc, SplitMix64, Watchdog, child, fnv1a64, posix_name, role, test_path};

use crate::{INDEX_ENV, NAME_ENV, arg_index, arg_name, ready, spawn_ready};

/// The bound on every await: generous, for a loaded machine; a bug fails instead of hanging.
const LIMIT: Duration = Duration::from_secs(60);

/// A current-thread runtime: a call that blocks its thread stalls everything on it.
fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Awaits `f` for at most [`LIMIT`].
async fn within<F: Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(LIMIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: not done within {LIMIT:?}"),
    }
}

/// A message: `seq u32 | random bytes | fnv1a64 of all before`, `min..=max` bytes long.
fn message(rng: &mut SplitMix64, seq: u32, min: usize, max: usize) -> Vec<u8> {
    let len = rng.range(min.max(12) as u64, max as u64) as usize;
    let mut m = vec![0; len];
    m[..4].copy_from_slice(&seq.to_le_bytes());
    rng.fill(&mut m[4..len - 8]);
    let sum = fnv1a64(&m[..len - 8]);
    m[len - 8..].copy_from_slice(&sum.to_le_bytes());
    m
}

/// Checks a message's checksum and returns its sequence number.
fn check(m: &[u8]) -> u32 {
    assert!(m.len() >= 12, "a message of {} bytes", m.len());
    let (body, sum) = m.split_at(m.len() - 8);
    assert_eq!(
        fnv1a64(body),
        u64::from_le_bytes(sum.try_into().unwrap()),
        "checksum of message {:?}",
        &m[..4]
    );
    u32::from_le_bytes(m[..4].try_into().unwrap())
}

/// A waker that reports each wake on a channel.
struct Signal(Mutex<mpsc::Sender<()>>, AtomicUsize);

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.1.fetch_add(1, Ordering::SeqCst);
        let _ = self.0.lock().unwrap().send(());
    }
}

fn signal() -> (Arc<Signal>, mpsc::Receiver<()>) {
    let (tx, rx) = mpsc::channel();
    (Arc::new(Signal(Mutex::new(tx), AtomicUsize::new(0))), rx)
}

/// Polls `f` once with `cx`.
fn poll_once<F: Future + ?Sized>(f: std::pin::Pin<&mut F>, waker: &Waker) -> Poll<F::Output> {
    f.poll(&mut Context::from_waker(waker))
}

fn is_send<T: Send>(_: &T) {}

/// Whether `r` is `EBADF` (a queue used in a direction its descriptor does not allow).
fn ebadf<T>(r: Result<T, Error>) -> bool {
    matches!(r, Err(Error::Io(e)) if e.raw_os_error() == Some(libc::EBADF))
}

/// The result of a future that must be ready at its first poll.
fn at_once<T>(r: Poll<T>) -> T {
    match r {
        Poll::Ready(r) => r,
        Poll::Pending => panic!("waited"),
    }
}

// ------------------------------------------------------------------------------------ POSIX

const N: u32 = 2000;

#[test]
fn async_receive_takes_every_message_of_another_process_whole_and_in_order() {
    let _wd = Watchdog::new("async receive", Duration::from_secs(120));
    if role().as_deref() == Some("sender") {
        let q = MessageQueue::open(&arg_name(), Access::Send).unwrap();
        let mut rng = SplitMix64::new(1);
        for seq in 0..N {
            q.send(&message(&mut rng, seq, 12, 256), 3).unwrap();
        }
        return;
    }
    let name = posix_name("as-rx");
    let q = MessageQueue::create(&name, 4, 256).unwrap();
    let test = test_path!(async_receive_takes_every_message_of_another_process_whole_and_in_order);
    let sender = Proc::spawn(child(&test, "sender").env(NAME_ENV, &name)).unwrap();
    current_thread().block_on(async {
        let q = AsyncMessageQueue::new(q).unwrap();
        let mut buf = vec![0; 256];
        for seq in 0..N {
            let (m, prio) = if seq % 2 == 0 {
                within("receive_vec", q.receive_vec()).await.unwrap()
            } else {
                let (n, prio) = within("receive", q.receive(&mut buf)).await.unwrap();
                (buf[..n].to_vec(), prio)
            };
            assert_eq!((check(&m), prio), (seq, 3));
        }
        assert_eq!(q.get_ref().len().unwrap(), 0);
    });
    sender.expect_success(LIMIT);
}

#[test]
fn a_waiting_send_leaves_the_current_thread_runtime_free_and_the_handle_blocking() {
    let _wd = Watchdog::new("async send waits", Duration::from_secs(60));
    let name = posix_name("as-tx");
    let q = MessageQueue::create(&name, 2, 64).unwrap();
    current_thread().block_on(async {
        let q = Arc::new(AsyncMessageQueue::new(q).unwrap());
        // The handle keeps its blocking mode; the registered descriptor is non-blocking.
        assert!(!q.get_ref().attributes().unwrap().nonblocking);
        let fl = rustix::fs::fcntl_getfl(q.as_fd()).unwrap();
        assert!(fl.contains(rustix::fs::OFlags::NONBLOCK));
        let sender = {
            let q = Arc::clone(&q);
            tokio::spawn(async move {
                for i in 0..3u8 {
                    q.send(&[i; 8], 0).await.unwrap();
                }
            })
        };
        // This task runs only if the third send waits without blocking the one thread.
        while q.get_ref().len().unwrap() < 2 {
            tokio::task::yield_now().await;
        }
        tokio::task::yield_now().await;
        assert!(!sender.is_finished(), "the third send found no room");
        assert_eq!(q.get_ref().try_receive_vec().unwrap().0, [0; 8]);
        within("the waiting send", sender).await.unwrap();
        assert_eq!(q.get_ref().try_receive_vec().unwrap().0, [1; 8]);
        assert_eq!(q.get_ref().try_receive_vec().unwrap().0, [2; 8]);
        // The handle's own calls still wait (here: time out, on the monotonic clock).
        assert!(matches!(
            q.get_ref().receive_vec_timeout(Duration::from_millis(1)),
            Err(Error::TimedOut)
        ));
    });
}

#[test]
fn a_receive_future_dropped_after_it_was_woken_leaves_the_message_for_another_process() {
    let _wd = Watchdog::new("dropped receive", Duration::from_secs(60));
    match role().as_deref() {
        Some("sender") => {
            let q = MessageQueue::open(&arg_name(), Access::Send).unwrap();
            q.send(&message(&mut SplitMix64::new(7), 41, 100, 100), 2)
                .unwrap();
            return;
        }
        Some("receiver") => {
            let q = MessageQueue::open(&arg_name(), Access::Receive).unwrap();
            let (m, prio) = q.try_receive_vec().unwrap();
            assert_eq!((check(&m), prio, m.len()), (41, 2, 100));
            return;
        }
        _ => {}
    }
    let test = test_path!(
        a_receive_future_dropped_after_it_was_woken_leaves_the_message_for_another_process
    );
    let name = posix_name("as-drop");
    let q = MessageQueue::create(&name, 2, 128).unwrap();
    // The owner is kept (given back at the end) until the other process has received.
    let _q = current_thread().block_on(async {
        let q = AsyncMessageQueue::new(q).unwrap();
        let (sig, woken) = signal();
        let waker = Waker::from(Arc::clone(&sig));
        let mut fut = Box::pin(q.receive_vec());
        assert!(poll_once(fut.as_mut(), &waker).is_pending());
        Proc::spawn(child(&test, "sender").env(NAME_ENV, &name))
            .unwrap()
            .expect_success(LIMIT);
        // Drive the reactor until it wakes the receive future: the message is there for it.
        within("the wake", async {
            while woken.try_recv().is_err() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await;
        // Dropped, woken but not polled again: it took nothing.
        drop(fut);
        assert_eq!(q.get_ref().len().unwrap(), 1);
        q.into_inner()
    });
    Proc::spawn(child(&test, "receiver").env(NAME_ENV, &name))
        .unwrap()
        .expect_success(LIMIT);
    assert_eq!(q_len(&name), 0);
}

fn q_len(name: &str) -> u64 {
    MessageQueue::open(name, Access::Receive)
        .unwrap()
        .len()
        .unwrap()
}

#[test]
fn receives_cancelled_by_select_and_timeouts_lose_no_message_of_another_process() {
    let _wd = Watchdog::new("cancelled receives", Duration::from_secs(180));
    let names = || {
        let n = arg_name();
        let (data, ticks) = n.split_once(',').unwrap();
        (data.to_owned(), ticks.to_owned())
    };
    if role().as_deref() == Some("sender") {
        // After each message, a tick on the second queue: the receiver's select sees both ready
        // and drops its pending receive of the first.
        let (data, ticks) = names();
        let data = MessageQueue::open(&data, Access::Send).unwrap();
        let ticks = MessageQueue::open(&ticks, Access::Send).unwrap();
        let mut rng = SplitMix64::new(2);
        for seq in 0..N {
            data.send(&message(&mut rng, seq, 12, 200), 1).unwrap();
            ticks.send(b"t", 0).unwrap();
        }
        return;
    }
    let test =
        test_path!(receives_cancelled_by_select_and_timeouts_lose_no_message_of_another_process);
    let (data, ticks) = (posix_name("as-cd"), posix_name("as-ct"));
    let dq = MessageQueue::create(&data, 4, 200).unwrap();
    let tq = MessageQueue::create(&ticks, 10, 1).unwrap();
    let sender =
        Proc::spawn(child(&test, "sender").env(NAME_ENV, format!("{data},{ticks}"))).unwrap();
    let (dropped, dropped_with_message, timeouts) = current_thread().block_on(async {
        let dq = AsyncMessageQueue::new(dq).unwrap();
        let tq = AsyncMessageQueue::new(tq).unwrap();
        let mut rng = SplitMix64::new(3);
        let (mut next, mut ticks_seen) = (0u32, 0u32);
        let (mut dropped, mut dropped_with_message, mut timeouts) = (0, 0, 0);
        within("all messages", async {
            while next < N {
                if rng.range(0, 3) == 0 {
                    // A timeout of up to 200 µs around the receive.
                    let t = Duration::from_micros(rng.range(0, 200));
                    match tokio::time::timeout(t, dq.receive_vec()).await {
                        Ok(r) => {
                            assert_eq!(check(&r.unwrap().0), next);
                            next += 1;
                        }
                        Err(_) => timeouts += 1,
                    }
                    continue;
                }
                tokio::select! {
                    biased;
                    t = tq.receive_vec() => {
                        assert_eq!(t.unwrap().0, b"t");
                        ticks_seen += 1;
                        dropped += 1;
                        if dq.get_ref().len().unwrap() > 0 {
                            dropped_with_message += 1;
                        }
                    }
                    r = dq.receive_vec() => {
                        assert_eq!(check(&r.unwrap().0), next, "in order, exactly once");
                        next += 1;
                    }
                }
            }
            while ticks_seen < N {
                tq.receive_vec().await.unwrap();
                ticks_seen += 1;
            }
        })
        .await;
        assert_eq!(dq.get_ref().len().unwrap(), 0, "nothing extra");
        (dropped, dropped_with_message, timeouts)
    });
    sender.expect_success(LIMIT);
    eprintln!(
        "{dropped} receives dropped by select ({dropped_with_message} with a message waiting), \
         {timeouts} by timeouts"
    );
    assert!(
        dropped_with_message > 0,
        "no receive was dropped with a message waiting"
    );
}

#[test]
fn sends_cancelled_by_timeouts_send_nothing_and_completed_ones_arrive_once() {
    let _wd = Watchdog::new("cancelled sends", Duration::from_secs(180));
    if role().as_deref() == Some("async-sender") {
        // Each message is retried after a timeout until a send completes: a cancelled send that
        // had sent anyway would show up twice at the receiver.
        let cancelled = current_thread().block_on(async {
            let q = MessageQueue::open(&arg_name(), Access::Send).unwrap();
            let q = AsyncMessageQueue::new(q).unwrap();
            let mut rng = SplitMix64::new(4);
            let mut cancelled = 0u32;
            for seq in 0..N {
                let m = message(&mut rng, seq, 12, 64);
                loop {
                    let t = Duration::from_micros(rng.range(0, 300));
                    match tokio::time::timeout(t, q.send(&m, 0)).await {
                        Ok(r) => break r.unwrap(),
                        Err(_) => cancelled += 1,
                    }
                }
            }
            cancelled
        });
        ready(&cancelled.to_string());
        return;
    }
    let test = test_path!(sends_cancelled_by_timeouts_send_nothing_and_completed_ones_arrive_once);
    let name = posix_name("as-cs");
    let q = MessageQueue::create(&name, 2, 64).unwrap();
    let mut cmd = child(&test, "async-sender");
    cmd.env(NAME_ENV, &name);
    let (tx, rx) = mpsc::channel();
    let spawner = std::thread::spawn(move || {
        let r = spawn_ready(&mut cmd);
        tx.send(()).unwrap();
        r
    });
    let mut buf = [0; 64];
    for seq in 0..N {
        // Now and then let the queue stay full for a while, so that sends wait and time out.
        if seq % 20 == 0 {
            let until = std::time::Instant::now() + Duration::from_millis(5);
            while q.len().unwrap() < 2 && std::time::Instant::now() < until {
                std::thread::yield_now();
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let (n, _) = q.receive_timeout(&mut buf, LIMIT).unwrap();
        assert_eq!(check(&buf[..n]), seq, "in order, exactly once");
    }
    rx.recv_timeout(LIMIT).expect("the sender finished");
    let (p, cancelled) = spawner.join().unwrap();
    p.expect_success(LIMIT);
    assert!(
        matches!(q.try_receive(&mut buf), Err(Error::WouldBlock)),
        "nothing extra"
    );
    let cancelled: u32 = cancelled.parse().unwrap();
    eprintln!("{cancelled} sends cancelled by timeouts");
    assert!(cancelled > 0, "no send was cancelled while it waited");
}

#[test]
fn tasks_of_a_multi_thread_runtime_share_a_queue_fed_by_four_processes() {
    let _wd = Watchdog::new("shared async queue", Duration::from_secs(180));
    const PER: u32 = 500;
    if role().as_deref() == Some("sender") {
        let q = MessageQueue::open(&arg_name(), Access::Send).unwrap();
        let me = arg_index() as u32;
        let mut rng = SplitMix64::new(u64::from(me));
        for i in 0..PER {
            q.send(&message(&mut rng, me * PER + i, 12, 128), me)
                .unwrap();
        }
        return;
    }
    let test = test_path!(tasks_of_a_multi_thread_runtime_share_a_queue_fed_by_four_processes);
    let name = posix_name("as-mt");
    let q = MessageQueue::create(&name, 8, 128).unwrap();
    let senders: Vec<Proc> = (0..4)
        .map(|i| {
            Proc::spawn(
                child(&test, "sender")
                    .env(NAME_ENV, &name)
                    .env(INDEX_ENV, i.to_string()),
            )
            .unwrap()
        })
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let seen = rt.block_on(async {
        let q = Arc::new(AsyncMessageQueue::new(q).unwrap());
        let left = Arc::new(AtomicUsize::new((4 * PER) as usize));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (q, left) = (Arc::clone(&q), Arc::clone(&left));
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    // Each task takes messages until all are claimed; a claim is a message
                    // this task will receive.
                    while left
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok()
                    {
                        let (m, prio) = within("receive", q.receive_vec()).await.unwrap();
                        let seq = check(&m);
                        assert_eq!(seq / PER, prio, "the sender's priority");
                        got.push(seq);
                    }
                    got
                })
            })
            .collect();
        let mut seen = vec![0u8; (4 * PER) as usize];
        for t in tasks {
            for seq in within("task", t).await.unwrap() {
                seen[seq as usize] += 1;
            }
        }
        seen
    });
    for s in senders {
        s.expect_success(LIMIT);
    }
    assert!(seen.iter().all(|&n| n == 1), "every message exactly once");
}

#[test]
fn async_errors_come_at_once_and_new_outside_a_runtime_hands_the_queue_back() {
    let _wd = Watchdog::new("async errors", Duration::from_secs(60));
    let name = posix_name("as-err");
    let q = MessageQueue::create(&name, 2, 32).unwrap();
    // Outside a runtime: an error, and the owner back, its queue still there.
    let e = AsyncMessageQueue::new(q).unwrap_err();
    assert!(e.to_string().contains("inside a tokio runtime"), "{e}");
    assert!(e.to_string().contains(&name), "{e}");
    let q = e.into_queue();
    assert!(q.is_owner());
    MessageQueue::open(&name, Access::Send).unwrap();
    current_thread().block_on(async {
        let q = AsyncMessageQueue::new(q).unwrap();
        is_send(&q.send(b"x", 0));
        is_send(&q.receive_vec());
        assert!(matches!(
            tokio::time::timeout(LIMIT, q.send(&[0; 33], 0))
                .await
                .unwrap(),
            Err(Error::MessageTooLarge { len: 33, max: 32 })
        ));
        assert!(matches!(
            tokio::time::timeout(LIMIT, q.send(b"x", ipc_mq::MAX_PRIORITY + 1))
                .await
                .unwrap(),
            Err(Error::InvalidPriority { .. })
        ));
        let mut small = [0; 31];
        assert!(matches!(
            tokio::time::timeout(LIMIT, q.receive(&mut small))
                .await
                .unwrap(),
            Err(Error::BufferTooSmall {
                len: 31,
                needed: Some(32)
            })
        ));
        // The wrong direction fails at once, on an empty and on a full queue.
        let rx_only =
            AsyncMessageQueue::new(MessageQueue::open(&name, Access::Receive).unwrap()).unwrap();
        let tx_only =
            AsyncMessageQueue::new(MessageQueue::open(&name, Access::Send).unwrap()).unwrap();
        assert!(ebadf(
            tokio::time::timeout(LIMIT, tx_only.receive_vec())
                .await
                .unwrap()
        ));
        tx_only.send(b"1", 0).await.unwrap();
        tx_only.send(b"2", 0).await.unwrap();
        assert!(ebadf(
            tokio::time::timeout(LIMIT, rx_only.send(b"3", 0))
                .await
                .unwrap()
        ));
        assert_eq!(rx_only.receive_vec().await.unwrap().0, b"1");
        // into_inner: the handle as it was (blocking, the owner).
        let q = q.into_inner();
        assert!(q.is_owner() && !q.attributes().unwrap().nonblocking);
        assert_eq!(q.try_receive_vec().unwrap().0, b"2");
        // Dropping an async owner removes its queue; a kept one stays.
        drop(AsyncMessageQueue::new(q).unwrap());
        assert!(matches!(
            MessageQueue::open(&name, Access::Send),
            Err(Error::NotFound { .. })
        ));
        let kept = posix_name("as-keep");
        let k = MessageQueue::options()
            .max_messages(1)
            .message_size(8)
            .on_drop(OnDrop::Keep)
            .create(&kept)
            .unwrap();
        let k = AsyncMessageQueue::new(k).unwrap();
        k.send(b"kept", 0).await.unwrap();
        // The owner lives inside the async queue: its queue is not stale.
        assert!(matches!(
            ipc_mq::remove_stale(&kept),
            Err(Error::OwnerAlive { .. })
        ));
        drop(k);
        assert_eq!(
            MessageQueue::open(&kept, Access::Receive)
                .unwrap()
                .try_receive_vec()
                .unwrap()
                .0,
            b"kept"
        );
        ipc_mq::remove_stale(&kept).unwrap();
    });
}

#[test]
fn a_descriptor_of_its_own_by_every_route_and_a_clear_error_when_there_is_none() {
    let _wd = Watchdog::new("descriptor routes", Duration::from_secs(60));
    if role().as_deref() == Some("no-proc") {
        // /proc hidden: a blocking named handle is reopened by its name; an adopted one
        // cannot be, and says what to do; a non-blocking one lends its own description.
        use nix::mount::{MsFlags, mount};
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).expect("unshare");
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .expect("make mounts private");
        mount(
            Some("tmpfs"),
            "/proc",
            Some("tmpfs"),
            MsFlags::empty(),
            None::<&str>,
        )
        .expect("hide /proc");
        assert!(std::fs::metadata("/proc/self").is_err());
        current_thread().block_on(async {
            let name = arg_name();
            let named =
                AsyncMessageQueue::new(MessageQueue::open(&name, Access::Both).unwrap()).unwrap();
            named.send(b"by name", 0).await.unwrap();
            assert_eq!(named.receive_vec().await.unwrap().0, b"by name");
            let fd = std::os::fd::OwnedFd::from(MessageQueue::open(&name, Access::Both).unwrap());
            let adopted = MessageQueue::from_fd(fd).unwrap();
            let e = AsyncMessageQueue::new(adopted).unwrap_err();
            assert!(e.to_string().contains("set_nonblocking(true)"), "{e}");
            let adopted = e.into_queue();
            adopted.set_nonblocking(true).unwrap();
            let adopted = AsyncMessageQueue::new(adopted).unwrap();
            adopted.send(b"own", 0).await.unwrap();
            assert_eq!(adopted.receive_vec().await.unwrap().0, b"own");
            assert!(adopted.get_ref().attributes().unwrap().nonblocking);
        });
        return;
    }
    let name = posix_name("as-route");
    let q = MessageQueue::create(&name, 2, 16).unwrap();
    current_thread().block_on(async {
        // An adopted descriptor has no name: reopened through /proc/self/fd.
        let fd = std::os::fd::OwnedFd::from(MessageQueue::open(&name, Access::Both).unwrap());
        let adopted = AsyncMessageQueue::new(MessageQueue::from_fd(fd).unwrap()).unwrap();
        adopted.send(b"via proc", 0).await.unwrap();
        assert_eq!(q.try_receive_vec().unwrap().0, b"via proc");
        // A send-only handle gets a send-only descriptor.
        let tx = AsyncMessageQueue::new(MessageQueue::open(&name, Access::Send).unwrap()).unwrap();
        let fl = rustix::fs::fcntl_getfl(tx.as_fd()).unwrap();
        assert_eq!(fl & rustix::fs::OFlags::RWMODE, rustix::fs::OFlags::WRONLY);
    });
    if ipc_testkit::skip_under_sanitizer("a hidden /proc") {
        return;
    }
    let test =
        test_path!(a_descriptor_of_its_own_by_every_route_and_a_clear_error_when_there_is_none);
    Proc::spawn(child(&test, "no-proc").env(NAME_ENV, &name))
        .unwrap()
        .expect_success(LIMIT);
}

#[test]
fn a_lent_description_set_back_to_blocking_still_never_blocks_the_runtime() {
    let _wd = Watchdog::new("lent description", Duration::from_secs(60));
    let name = posix_name("as-lent");
    let q = MessageQueue::options()
        .max_messages(1)
        .message_size(8)
        .nonblocking(true)
        .create(&name)
        .unwrap();
    current_thread().block_on(async {
        let q = Arc::new(AsyncMessageQueue::new(q).unwrap());
        // The registered descriptor shares the handle's description, now made blocking again.
        q.get_ref().set_nonblocking(false).unwrap();
        assert!(
            !rustix::fs::fcntl_getfl(q.as_fd())
                .unwrap()
                .contains(rustix::fs::OFlags::NONBLOCK)
        );
        let receiver = {
            let q = Arc::clone(&q);
            tokio::spawn(async move { q.receive_vec().await.unwrap().0 })
        };
        // Runs only if the receive waits in the reactor, not in the kernel.
        tokio::task::yield_now().await;
        assert!(!receiver.is_finished());
        q.send(b"one", 0).await.unwrap();
        assert_eq!(within("the receive", receiver).await.unwrap(), b"one");
        // And a send into the full queue waits in the reactor too.
        q.send(b"two", 0).await.unwrap();
        let sender = {
            let q = Arc::clone(&q);
            tokio::spawn(async move { q.send(b"three", 0).await.unwrap() })
        };
        tokio::task::yield_now().await;
        assert!(!sender.is_finished());
        assert_eq!(q.receive_vec().await.unwrap().0, b"two");
        within("the send", sender).await.unwrap();
        assert_eq!(q.receive_vec().await.unwrap().0, b"three");
    });
}

#[test]
fn poll_forms_serve_a_hand_written_stream() {
    let _wd = Watchdog::new("poll forms", Duration::from_secs(60));
    let name = posix_name("as-poll");
    let q = MessageQueue::create(&name, 2, 16).unwrap();
    current_thread().block_on(async {
        let q = AsyncMessageQueue::new(q).unwrap();
        let sender = async {
            for i in 0..50u8 {
                std::future::poll_fn(|cx| q.poll_send(cx, &[i; 3], 0))
                    .await
                    .unwrap();
            }
        };
        let receiver = async {
            let mut buf = [0; 16];
            for i in 0..50u8 {
                let (n, _) = std::future::poll_fn(|cx| q.poll_receive(cx, &mut buf))
                    .await
                    .unwrap();
                assert_eq!(&buf[..n], &[i; 3]);
            }
        };
        within("poll forms", async { tokio::join!(sender, receiver) }).await;
    });
}

// ------------------------------------------------------------------------------- System V

/// A private queue (children reach it by id; no key another process could take or clean up).
fn create_sysv() -> SysvQueue {
    SysvQueue::create(Key::PRIVATE).unwrap()
}

fn child_queue() -> SysvQueue {
    SysvQueue::from_id(arg_name().parse().unwrap()).unwrap()
}

#[test]
fn sysv_async_receive_by_type_takes_every_message_of_another_process() {
    let _wd = Watchdog::new("sysv async types", Duration::from_secs(120));
    const PER: u32 = 400;
    if role().as_deref() == Some("sender") {
        let q = child_queue();
        let mut rng = SplitMix64::new(5);
        for i in 0..PER {
            for t in 1..=3 {
                q.send(t, &message(&mut rng, i, 12, 3000)).unwrap();
            }
        }
        return;
    }
    let test = test_path!(sysv_async_receive_by_type_takes_every_message_of_another_process);
    let q = create_sysv();
    let sender = Proc::spawn(child(&test, "sender").env(NAME_ENV, q.id().to_string())).unwrap();
    current_thread().block_on(async {
        let q = AsyncSysvQueue::new(q);
        let by_type = |t: i64| {
            let q = &q;
            async move {
                let mut m = SysvMessage::with_capacity(4096);
                let mut buf = vec![0; 4096];
                for i in 0..PER {
                    let (text, mtype) = match i % 3 {
                        0 => q.receive_vec(Select::Type(t)).await.unwrap(),
                        1 => {
                            let (n, mtype) = q.receive(&mut buf, Select::Type(t)).await.unwrap();
                            (buf[..n].to_vec(), mtype)
                        }
                        _ => {
                            q.receive_message(&mut m, Select::Type(t)).await.unwrap();
                            (m.text().to_vec(), m.mtype())
                        }
                    };
                    assert_eq!((check(&text), mtype), (i, t), "type {t} in order");
                }
            }
        };
        within("three receivers", async {
            tokio::join!(by_type(1), by_type(2), by_type(3))
        })
        .await;
        assert_eq!(q.get_ref().stats().unwrap().messages, 0);
    });
    sender.expect_success(LIMIT);
}

#[test]
fn sysv_a_waiting_send_leaves_the_current_thread_runtime_free() {
    let _wd = Watchdog::new("sysv async send waits", Duration::from_secs(60));
    let q = create_sysv();
    let size = msgmax().min(q.stats().unwrap().max_bytes as usize / 2);
    let mut sent = 0;
    while q.try_send(1, &vec![sent as u8; size]).is_ok() {
        sent += 1;
    }
    assert!(sent >= 1);
    current_thread().block_on(async {
        let q = Arc::new(AsyncSysvQueue::new(q));
        let sender = {
            let q = Arc::clone(&q);
            tokio::spawn(async move { q.send(99, &vec![0xee; size]).await.unwrap() })
        };
        // This task runs only if the send waits without blocking the one thread.
        tokio::task::yield_now().await;
        assert!(!sender.is_finished(), "the send found no room");
        assert_eq!(q.get_ref().try_receive_vec(Select::Any).unwrap().0[0], 0);
        within("the waiting send", sender).await.unwrap();
        for i in 1..sent {
            assert_eq!(
                q.get_ref().try_receive_vec(Select::Any).unwrap().0[0],
                i as u8
            );
        }
        assert_eq!(
            q.get_ref().try_receive_vec(Select::Any).unwrap(),
            (vec![0xee; size], 99)
        );
    });
}

/// `/proc/sys/kernel/msgmax`: the largest System V message.
fn msgmax() -> usize {
    std::fs::read_to_string("/proc/sys/kernel/msgmax")
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn sysv_a_receive_future_dropped_after_the_helper_woke_it_leaves_the_message_in_the_queue() {
    let _wd = Watchdog::new("sysv dropped receive", Duration::from_secs(60));
    match role().as_deref() {
        Some("sender") => {
            child_queue()
                .send(4, &message(&mut SplitMix64::new(8), 77, 500, 500))
                .unwrap();
            return;
        }
        Some("receiver") => {
            let (m, t) = child_queue().try_receive_vec(Select::Any).unwrap();
            assert_eq!((check(&m), t, m.len()), (77, 4, 500));
            return;
        }
        _ => {}
    }
    let test = test_path!(
        sysv_a_receive_future_dropped_after_the_helper_woke_it_leaves_the_message_in_the_queue
    );
    // No runtime at all: the future is polled by hand.
    let q = AsyncSysvQueue::new(create_sysv());
    let id = q.get_ref().id().to_string();
    let (sig, woken) = signal();
    let waker = Waker::from(Arc::clone(&sig));
    let mut fut = Box::pin(q.receive_vec(Select::Type(4)));
    assert!(poll_once(fut.as_mut(), &waker).is_pending());
    Proc::spawn(child(&test, "sender").env(NAME_ENV, &id))
        .unwrap()
        .expect_success(LIMIT);
    // The helper saw the message and woke the future; it is dropped without another poll.
    woken
        .recv_timeout(LIMIT)
        .expect("the helper woke the future");
    drop(fut);
    assert_eq!(
        q.get_ref().stats().unwrap().messages,
        1,
        "still in the queue"
    );
    Proc::spawn(child(&test, "receiver").env(NAME_ENV, &id))
        .unwrap()
        .expect_success(LIMIT);
    assert_eq!(q.get_ref().stats().unwrap().messages, 0);
}

#[test]
fn sysv_receives_and_sends_cancelled_at_random_moments_lose_nothing_across_processes() {
    let _wd = Watchdog::new("sysv cancellation", Duration::from_secs(180));
    const M: u32 = 1500;
    let ids = || {
        let n = arg_name();
        let (d, t) = n.split_once(',').unwrap();
        (d.parse().unwrap(), t.parse().unwrap())
    };
    if role().as_deref() == Some("async-sender") {
        // Each message is retried after a timeout until a send completes (a cancelled send that
        // had sent anyway would arrive twice); after each, a tick on the second queue.
        let (data, ticks): (i32, i32) = ids();
        let cancelled = current_thread().block_on(async {
            let q = AsyncSysvQueue::new(SysvQueue::from_id(data).unwrap());
            let ticks = SysvQueue::from_id(ticks).unwrap();
            let mut rng = SplitMix64::new(9);
            let mut cancelled = 0u32;
            for seq in 0..M {
                let m = message(&mut rng, seq, 1000, 5000);
                loop {
                    let t = Duration::from_micros(rng.range(0, 2000));
                    match tokio::time::timeout(t, q.send(1 + i64::from(seq % 2), &m)).await {
                        Ok(r) => break r.unwrap(),
                        Err(_) => cancelled += 1,
                    }
                }
                ticks.try_send(1, b"t").unwrap();
            }
            cancelled
        });
        ready(&cancelled.to_string());
        return;
    }
    let test = test_path!(
        sysv_receives_and_sends_cancelled_at_random_moments_lose_nothing_across_processes
    );
    let (q, tq) = (create_sysv(), create_sysv());
    let mut cmd = child(&test, "async-sender");
    cmd.env(NAME_ENV, format!("{},{}", q.id(), tq.id()));
    let spawner = std::thread::spawn(move || spawn_ready(&mut cmd));
    let counts = current_thread().block_on(async {
        let (q, tq) = (AsyncSysvQueue::new(q), AsyncSysvQueue::new(tq));
        let mut rng = SplitMix64::new(10);
        let (mut next, mut ticks) = (0u32, 0u32);
        // Receives dropped: by a tick (of which with a message waiting), after one poll, by a
        // timeout.
        let mut counts = [0u32; 4];
        let take = |r: Result<(Vec<u8>, i64), Error>, next: &mut u32| {
            let (m, mtype) = r.unwrap();
            assert_eq!(
                (check(&m), mtype),
                (*next, 1 + i64::from(*next % 2)),
                "in order, once"
            );
            *next += 1;
        };
        within("all messages", async {
            while next < M {
                let sel = if rng.range(0, 1) == 0 {
                    Select::Any
                } else {
                    Select::Type(1 + i64::from(next % 2))
                };
                let t = Duration::from_micros(rng.range(0, 3000));
                match rng.range(0, 3) {
                    0 => match tokio::time::timeout(t, q.receive_vec(sel)).await {
                        Ok(r) => take(r, &mut next),
                        Err(_) => counts[3] += 1,
                    },
                    1 => {
                        // Poll the receive once, then drop it, whatever it was doing.
                        let mut fut = pin!(q.receive_vec(sel));
                        match std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await {
                            Poll::Ready(r) => take(r, &mut next),
                            Poll::Pending => counts[2] += 1,
                        }
                        tokio::time::sleep(t / 4).await;
                    }
                    _ => tokio::select! {
                        biased;
                        tick = tq.receive_vec(Select::Any) => {
                            assert_eq!(tick.unwrap().0, b"t");
                            ticks += 1;
                            counts[0] += 1;
                            if q.get_ref().stats().unwrap().messages > 0 {
                                counts[1] += 1;
                            }
                        }
                        r = q.receive_vec(sel) => take(r, &mut next),
                    },
                }
            }
            while ticks < M {
                tq.receive_vec(Select::Any).await.unwrap();
                ticks += 1;
            }
        })
        .await;
        assert_eq!(q.get_ref().stats().unwrap().messages, 0, "nothing extra");
        counts
    });
    let (p, cancelled) = spawner.join().unwrap();
    p.expect_success(LIMIT);
    let cancelled: u32 = cancelled.parse().unwrap();
    eprintln!(
        "receives dropped: {} by a tick ({} with a message waiting), {} after one poll, {} by \
         timeouts; sends: {cancelled} by timeouts",
        counts[0], counts[1], counts[2], counts[3]
    );
    assert!(
        counts[1] > 0,
        "no receive was dropped with a message waiting"
    );
    assert!(cancelled > 0, "no send was cancelled while it waited");
}

/// `(voluntary context switches, the thread's run time in ns)` of this process's System V wait
/// helper thread, if it runs.
fn helper_thread() -> Option<(u64, u64)> {
    for t in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let p = t.path();
        if std::fs::read_to_string(p.join("comm")).ok()?.trim() != "ipc-mq-sysv" {
            continue;
        }
        let status = std::fs::read_to_string(p.join("status")).ok()?;
        let switches = status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))?
            .trim()
            .parse()
            .ok()?;
        let run = std::fs::read_to_string(p.join("schedstat")).ok()?;
        let run = run.split_whitespace().next()?.parse().ok()?;
        return Some((switches, run));
    }
    None
}

#[test]
fn sysv_a_pending_wait_does_not_poll_its_task_and_a_dropped_one_leaves_the_helper_asleep() {
    let _wd = Watchdog::new("sysv wait cost", Duration::from_secs(60));
    if role().as_deref() != Some("alone") {
        // In a process of its own: no other test's waits share the helper.
        let test = test_path!(
            sysv_a_pending_wait_does_not_poll_its_task_and_a_dropped_one_leaves_the_helper_asleep
        );
        Proc::spawn(&mut child(&test, "alone"))
            .unwrap()
            .expect_success(LIMIT);
        return;
    }
    let q = AsyncSysvQueue::new(create_sysv());
    assert!(helper_thread().is_none(), "no thread before a wait");
    // A receive that succeeds at once starts no thread.
    q.get_ref().send(1, b"now").unwrap();
    let (sig, woken) = signal();
    let waker = Waker::from(Arc::clone(&sig));
    assert!(matches!(
        poll_once(pin!(q.receive_vec(Select::Any)), &waker),
        Poll::Ready(Ok(_))
    ));
    assert!(
        helper_thread().is_none(),
        "no thread for a receive that did not wait"
    );

    // A pending receive on an empty queue: the helper looks, the task is not woken.
    let mut fut = Box::pin(q.receive_vec(Select::Any));
    assert!(poll_once(fut.as_mut(), &waker).is_pending());
    // (A new thread takes its name a moment after it starts.)
    let until = std::time::Instant::now() + LIMIT;
    let (s0, run0) = loop {
        match helper_thread() {
            Some(h) => break h,
            None if std::time::Instant::now() < until => std::thread::yield_now(),
            None => panic!("no helper thread"),
        }
    };
    assert!(woken.recv_timeout(Duration::from_millis(300)).is_err());
    assert_eq!(
        sig.1.load(Ordering::SeqCst),
        0,
        "not woken while the queue is empty"
    );
    let (s1, run1) = helper_thread().unwrap();
    assert!(s1 > s0, "the helper looked at the queue meanwhile");
    eprintln!(
        "helper: {} wake-ups, {} ns of CPU each, in 300 ms with one wait",
        s1 - s0,
        run1.saturating_sub(run0) / (s1 - s0)
    );

    // Twenty waits on twenty queues, begun at different moments: once they wait at the longest
    // interval, they share the helper's wake-ups (about one every 5 ms), not one each.
    let queues: Vec<AsyncSysvQueue> = (0..20)
        .map(|_| AsyncSysvQueue::new(create_sysv()))
        .collect();
    let mut many: Vec<_> = Vec::new();
    for q in &queues {
        let mut f = Box::pin(q.receive_vec(Select::Any));
        assert!(poll_once(f.as_mut(), &waker).is_pending());
        many.push(f);
        std::thread::sleep(Duration::from_millis(1)); // spread their schedules
    }
    std::thread::sleep(Duration::from_millis(50)); // past the short first intervals
    let (m0, _) = helper_thread().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (m1, _) = helper_thread().unwrap();
    eprintln!("helper: {} wake-ups in 300 ms with 21 waits", m1 - m0);
    assert!(
        m1 - m0 <= 120,
        "{} wake-ups: the waits do not share them",
        m1 - m0
    );
    assert_eq!(
        sig.1.load(Ordering::SeqCst),
        0,
        "no task woken: every queue is empty"
    );
    drop(many);

    // Dropped: the helper sleeps and stays asleep.
    drop(fut);
    // It may be in a round right now; after at most one more nap it has nothing to do.
    std::thread::sleep(Duration::from_millis(20));
    let (s2, run2) = helper_thread().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let (s3, run3) = helper_thread().unwrap();
    assert_eq!(
        (s3, run3),
        (s2, run2),
        "the helper ran with no wait pending"
    );
}

#[test]
fn sysv_a_queue_removed_while_futures_wait_ends_them_with_removed() {
    let _wd = Watchdog::new("sysv removed", Duration::from_secs(60));
    if role().as_deref() == Some("remover") {
        ipc_mq::sysv::remove(arg_name().parse().unwrap()).unwrap();
        return;
    }
    let test = test_path!(sysv_a_queue_removed_while_futures_wait_ends_them_with_removed);
    let q = create_sysv();
    let id = q.id();
    while q.try_send(1, &vec![0; msgmax()]).is_ok() {}
    current_thread().block_on(async {
        let q = AsyncSysvQueue::new(q);
        let rx = q.receive_vec(Select::Type(9));
        let tx = q.send(2, b"no room");
        let remove = async {
            tokio::task::yield_now().await;
            Proc::spawn(child(&test, "remover").env(NAME_ENV, id.to_string()))
                .unwrap()
                .expect_success(LIMIT);
        };
        let (r, s, ()) = within("the removal", async { tokio::join!(rx, tx, remove) }).await;
        assert!(matches!(r, Err(Error::Removed { .. })), "{r:?}");
        assert!(matches!(s, Err(Error::Removed { .. })), "{s:?}");
    });
}

#[test]
fn sysv_errors_come_at_once() {
    let _wd = Watchdog::new("sysv async errors", Duration::from_secs(60));
    let q = create_sysv();
    let msgmax = msgmax();
    current_thread().block_on(async {
        let q = AsyncSysvQueue::new(q);
        is_send(&q.send(1, b""));
        is_send(&q.receive_vec(Select::Any));
        let w = Waker::noop();
        let r: Result<(), Error> = at_once(poll_once(pin!(q.send(0, b"x")), w));
        assert!(matches!(r, Err(Error::InvalidMessageType { mtype: 0 })));
        let r = at_once(poll_once(pin!(q.receive_vec(Select::Type(-1))), w));
        assert!(matches!(r, Err(Error::InvalidMessageType { mtype: -1 })));
        let r = at_once(poll_once(pin!(q.send(1, &vec![0; msgmax + 1])), w));
        assert!(matches!(r, Err(Error::MessageTooLarge { .. })));
        q.send(1, &vec![0; msgmax]).await.unwrap();
        let mut buf = [0; 4];
        let r = at_once(poll_once(pin!(q.receive(&mut buf, Select::Any)), w));
        assert!(matches!(r, Err(Error::BufferTooSmall { .. })), "{r:?}");
        assert_eq!(q.get_ref().stats().unwrap().messages, 1, "it stays");
        let q = q.into_inner();
        assert!(q.is_owner());
    });
}

/// The smallest executor: polls `f` on this thread, parked between wakes.
fn block_on<F: Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut f = pin!(f);
    loop {
        if let Poll::Ready(v) = poll_once(f.as_mut(), &waker) {
            return v;
        }
        std::thread::park_timeout(LIMIT);
    }
}

#[test]
fn sysv_async_needs_no_runtime_any_executor_drives_it() {
    let _wd = Watchdog::new("sysv any executor", Duration::from_secs(60));
    if role().as_deref() == Some("sender") {
        let q = child_queue();
        let mut rng = SplitMix64::new(11);
        for i in 0..200 {
            q.send(3, &message(&mut rng, i, 12, 100)).unwrap();
        }
        return;
    }
    let test = test_path!(sysv_async_needs_no_runtime_any_executor_drives_it);
    let q = AsyncSysvQueue::new(create_sysv());
    let sender =
        Proc::spawn(child(&test, "sender").env(NAME_ENV, q.get_ref().id().to_string())).unwrap();
    block_on(async {
        for i in 0..200 {
            let (m, t) = q.receive_vec(Select::Type(3)).await.unwrap();
            assert_eq!((check(&m), t), (i, 3));
        }
    });
    sender.expect_success(LIMIT);
}

#[test]
#[allow(unsafe_code)]
fn sysv_a_wait_in_a_forked_child_fails_instead_of_hanging() {
    let _wd = Watchdog::new("sysv after fork", Duration::from_secs(60));
    if role().as_deref() != Some("forker") {
        let test = test_path!(sysv_a_wait_in_a_forked_child_fails_instead_of_hanging);
        Proc::spawn(&mut child(&test, "forker"))
            .unwrap()
            .expect_success(LIMIT);
        return;
    }
    // Start the helper, with a wait pending while we fork.
    let q = AsyncSysvQueue::new(create_sysv());
    let mut pending = Box::pin(q.receive_vec(Select::Type(1)));
    assert!(poll_once(pending.as_mut(), Waker::noop()).is_pending());
    // SAFETY: the child makes only async-signal-safe calls (and malloc, which glibc allows
    // after fork) and leaves with `_exit`.
    match unsafe { nix::unistd::fork() }.expect("fork") {
        nix::unistd::ForkResult::Child => {
            let code = match poll_once(pin!(q.receive_vec(Select::Type(2))), Waker::noop()) {
                Poll::Ready(Err(Error::Io(_))) => 0,
                Poll::Ready(_) => 2,
                Poll::Pending => 3,
            };
            // The copy of the pending future is the parent's: forgotten, not dropped.
            std::mem::forget(pending);
            std::mem::forget(q);
            // SAFETY: `_exit` ends the child without running the parent's atexit handlers.
            unsafe { libc::_exit(code) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            let status = nix::sys::wait::waitpid(child, None).expect("waitpid");
            assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0));
        }
    }
    drop(pending);
}
