//! What the docs promise a child forked from a multi-threaded process may do, done in such a
//! child: the parent is a re-run test process whose other threads are busy with the crate, the
//! allocator and `/proc` when it forks.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ipc_mq::{Access, Error, Key, MessageQueue, OnDrop, Select, SysvMessage, SysvQueue};
use ipc_testkit::{Proc, Watchdog, child, posix_name, role, test_path};

use crate::NameGuard;

/// Threads that keep the allocator, `/proc` reads and the crate busy until dropped.
struct Busy(Arc<AtomicBool>, Vec<std::thread::JoinHandle<()>>);

impl Busy {
    fn start(name: &str) -> Busy {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..3)
            .map(|i| {
                let (stop, name) = (Arc::clone(&stop), name.to_owned());
                std::thread::spawn(move || {
                    let mut keep = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        keep.push(vec![i as u8; 1000 + i * 77]);
                        if keep.len() > 64 {
                            keep.clear();
                        }
                        let _ = MessageQueue::open(&name, Access::Send).map(|q| q.len());
                        let _ = ipc_mq::Limits::read();
                        let _ = MessageQueue::open(&posix_name("absent"), Access::Send);
                    }
                })
            })
            .collect();
        Busy(stop, threads)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
        for t in self.1.drain(..) {
            let _ = t.join();
        }
    }
}

/// The forked child's part: the calls the docs allow after fork, checked without panicking
/// (a failed check is a non-zero exit code naming it); then it drops the inherited owners.
fn in_the_child(q: MessageQueue, s: SysvQueue, mut m: SysvMessage) -> i32 {
    let mut buf = [0u8; 64];
    match q.try_receive(&mut buf) {
        Ok((6, 2)) if &buf[..6] == b"first!" => {}
        _ => return 10,
    }
    if !matches!(
        q.receive_timeout(&mut buf, Duration::from_secs(10)),
        Ok((6, 1))
    ) {
        return 11;
    }
    if q.send(b"from the child", 5).is_err() || q.try_send(b"again", 4).is_err() {
        return 12;
    }
    if q.send_timeout(b"third", 3, Duration::from_secs(10))
        .is_err()
    {
        return 13;
    }
    if !q.attributes().is_ok_and(|a| a.current_messages == 3) || q.is_owner() {
        return 14;
    }
    match s.try_receive(&mut buf, Select::Type(4)) {
        Ok((4, 4)) if &buf[..4] == b"four" => {}
        _ => return 20,
    }
    if s.receive_message(&mut m, Select::Type(6)).is_err() || m.text() != b"six" {
        return 21;
    }
    if s.send(7, b"from the child").is_err() || s.is_owner() {
        return 22;
    }
    if !matches!(
        s.receive_timeout(&mut buf, Select::Type(9), Duration::from_millis(1)),
        Err(Error::TimedOut)
    ) {
        return 23;
    }
    drop(q);
    drop(s);
    0
}

#[test]
fn a_child_forked_from_a_busy_process_uses_inherited_queues_and_removes_nothing() {
    let _wd = Watchdog::new("after fork", Duration::from_secs(60));
    if role().as_deref() == Some("forker") {
        forker();
        return;
    }
    let test =
        test_path!(a_child_forked_from_a_busy_process_uses_inherited_queues_and_removes_nothing);
    Proc::spawn(&mut child(&test, "forker"))
        .unwrap()
        .expect_success(Duration::from_secs(50));
}

#[allow(unsafe_code)]
fn forker() {
    use nix::sys::wait::{WaitStatus, waitpid};
    use nix::unistd::{ForkResult, fork};

    let name = posix_name("fork");
    let _guard = NameGuard(name.clone());
    let q = MessageQueue::create(&name, 4, 64).unwrap();
    q.send(b"first!", 2).unwrap();
    q.send(b"second", 1).unwrap();
    let s = SysvQueue::create(Key::PRIVATE).unwrap();
    s.send(4, b"four").unwrap();
    s.send(6, b"six").unwrap();
    let m = SysvMessage::with_capacity(64);

    let busy = Busy::start(&name);
    // SAFETY: the child makes only the calls the crate documents as allowed after fork in a
    // multi-threaded process, and `_exit`s; it never returns into the harness.
    let pid = match unsafe { fork() }.unwrap() {
        ForkResult::Child => {
            let code = in_the_child(q, s, m);
            // SAFETY: `_exit` ends the child without running the parent's exit handlers.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => child,
    };
    drop(busy);
    match waitpid(pid, None).unwrap() {
        WaitStatus::Exited(_, 0) => {}
        other => panic!("the forked child failed: {other:?}"),
    }
    // Nothing was removed, the parent is still the owner, and the child's messages arrived.
    assert!(q.is_owner() && s.is_owner());
    assert!(matches!(
        ipc_mq::remove_stale(&name),
        Err(Error::OwnerAlive { .. })
    ));
    let got: Vec<_> = (0..3).map(|_| q.try_receive_vec().unwrap()).collect();
    assert_eq!(
        got,
        vec![
            (b"from the child".to_vec(), 5),
            (b"again".to_vec(), 4),
            (b"third".to_vec(), 3)
        ]
    );
    assert_eq!(
        s.try_receive_vec(Select::Any).unwrap(),
        (b"from the child".to_vec(), 7)
    );
    assert_eq!(s.stats().unwrap().messages, 0);

    // A forked child that still holds an inherited owner keeps the queue owned.
    let kept = posix_name("fork");
    let _g2 = NameGuard(kept.clone());
    let k = MessageQueue::options()
        .max_messages(1)
        .message_size(8)
        .on_drop(OnDrop::Keep)
        .create(&kept)
        .unwrap();
    let (r, w) = nix::unistd::pipe().unwrap();
    let busy = Busy::start(&kept);
    // SAFETY: this child only blocks in read(2), closes descriptors and `_exit`s.
    let holder = match unsafe { fork() }.unwrap() {
        ForkResult::Child => {
            drop(w);
            let mut b = [0u8; 1];
            let _ = nix::unistd::read(&r, &mut b);
            drop(k);
            // SAFETY: `_exit` ends the child without running the parent's exit handlers.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => child,
    };
    drop(busy);
    drop(r);
    drop(k); // the parent's owner is gone; the child's copy of its descriptor is not
    assert!(matches!(
        ipc_mq::remove_stale(&kept),
        Err(Error::OwnerAlive { .. })
    ));
    drop(w); // the child reads end-of-file, drops its copy and exits
    assert_eq!(
        waitpid(holder, None).unwrap(),
        WaitStatus::Exited(holder, 0)
    );
    ipc_mq::remove_stale(&kept).unwrap();
}
