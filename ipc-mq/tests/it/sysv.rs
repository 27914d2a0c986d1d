//! System V queues across real processes.

use std::time::Duration;

use ipc_mq::{Error, Key, Select, SysvMessage, SysvQueue};
use ipc_testkit::{Watchdog, child, role, sysv_key, test_path};

use crate::{NAME_ENV, arg_name};

/// Creates a queue on a fresh workspace key (another key if one is taken).
fn create() -> (SysvQueue, Key) {
    loop {
        let key = Key::new(sysv_key());
        match SysvQueue::create(key) {
            Ok(q) => return (q, key),
            Err(Error::AlreadyExists { .. }) => continue,
            Err(e) => panic!("{e}"),
        }
    }
}

fn child_key() -> Key {
    Key::new(arg_name().parse().unwrap())
}

#[test]
fn type_selective_receive_returns_the_right_messages_in_order_across_processes() {
    let _wd = Watchdog::new("sysv types", Duration::from_secs(30));
    match role().as_deref() {
        Some("sender") => {
            let q = SysvQueue::open(child_key()).unwrap();
            assert!(!q.is_owner());
            for (i, t) in [3, 1, 2, 1, 3, 2, 5].into_iter().enumerate() {
                q.send(t, format!("{t}:{i}").as_bytes()).unwrap();
            }
            return;
        }
        Some("waiter") => {
            // Blocks until a type-7 message arrives, skipping the others.
            let q = SysvQueue::open(child_key()).unwrap();
            let (m, t) = q.receive_vec(Select::Type(7)).unwrap();
            assert_eq!((m.as_slice(), t), (&b"seven"[..], 7));
            return;
        }
        _ => {}
    }
    let test =
        test_path!(type_selective_receive_returns_the_right_messages_in_order_across_processes);
    let (q, key) = create();
    ipc_testkit::Proc::spawn(child(&test, "sender").env(NAME_ENV, key.as_raw().to_string()))
        .unwrap()
        .expect_success(Duration::from_secs(20));
    let take = |sel| {
        let (m, t) = q.try_receive_vec(sel).unwrap();
        (String::from_utf8(m).unwrap(), t)
    };
    assert_eq!(take(Select::Type(2)), ("2:2".to_owned(), 2));
    assert_eq!(take(Select::Type(2)), ("2:5".to_owned(), 2));
    assert!(matches!(
        q.try_receive_vec(Select::Type(2)),
        Err(Error::WouldBlock)
    ));
    // Lowest type up to 3 first: the 1s in order, then the 3s.
    assert_eq!(take(Select::UpTo(3)), ("1:1".to_owned(), 1));
    assert_eq!(take(Select::UpTo(3)), ("1:3".to_owned(), 1));
    assert_eq!(take(Select::UpTo(3)), ("3:0".to_owned(), 3));
    assert_eq!(take(Select::Any), ("3:4".to_owned(), 3));
    assert_eq!(take(Select::Any), ("5:6".to_owned(), 5));
    assert!(matches!(
        q.try_receive_vec(Select::Any),
        Err(Error::WouldBlock)
    ));

    let waiter =
        ipc_testkit::Proc::spawn(child(&test, "waiter").env(NAME_ENV, key.as_raw().to_string()))
            .unwrap();
    q.send(5, b"five").unwrap();
    q.send(7, b"seven").unwrap();
    waiter.expect_success(Duration::from_secs(20));
    assert_eq!(
        take(Select::Any),
        ("five".to_owned(), 5),
        "the type-5 message stayed"
    );
    let st = q.stats().unwrap();
    assert_eq!((st.messages, st.bytes), (0, 0));
}

/// Whether a thread of process `pid` is asleep in `msgrcv` (its kernel wait channel says so).
fn waits_in_msgrcv(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|t| {
        std::fs::read_to_string(t.path().join("wchan")).is_ok_and(|w| w.contains("msgrcv"))
    })
}

#[test]
fn removing_the_queue_ends_a_waiting_receive_with_removed() {
    let _wd = Watchdog::new("sysv removal", Duration::from_secs(30));
    if role().as_deref() == Some("waiter") {
        let q = SysvQueue::from_id(arg_name().parse().unwrap()).unwrap();
        let mut buf = [0; 16];
        let r = q.receive(&mut buf, Select::Any);
        assert!(matches!(r, Err(Error::Removed { .. })), "{r:?}");
        return;
    }
    let test = test_path!(removing_the_queue_ends_a_waiting_receive_with_removed);
    let q = SysvQueue::create(Key::PRIVATE).unwrap();
    let waiter =
        ipc_testkit::Proc::spawn(child(&test, "waiter").env(NAME_ENV, q.id().to_string())).unwrap();
    // Remove only once the child sleeps in msgrcv (poll its wait channel, bounded).
    let pid = waiter.id();
    let t = std::time::Instant::now();
    while !waits_in_msgrcv(pid) {
        assert!(t.elapsed() < Duration::from_secs(20), "child never waited");
        std::thread::yield_now();
    }
    q.remove().unwrap();
    waiter.expect_success(Duration::from_secs(20));
}

#[test]
fn stats_count_messages_bytes_and_the_last_sender() {
    let _wd = Watchdog::new("sysv stats", Duration::from_secs(30));
    if role().as_deref() == Some("sender") {
        let q = SysvQueue::from_id(arg_name().parse().unwrap()).unwrap();
        q.send(1, &[1; 10]).unwrap();
        q.send(2, &[2; 20]).unwrap();
        return;
    }
    let test = test_path!(stats_count_messages_bytes_and_the_last_sender);
    let q = SysvQueue::create(Key::PRIVATE).unwrap();
    let st = q.stats().unwrap();
    assert_eq!((st.messages, st.bytes, st.mode), (0, 0, 0o600));
    let kid =
        ipc_testkit::Proc::spawn(child(&test, "sender").env(NAME_ENV, q.id().to_string())).unwrap();
    let pid = kid.id();
    kid.expect_success(Duration::from_secs(20));
    let st = q.stats().unwrap();
    assert_eq!((st.messages, st.bytes, st.last_sender), (2, 30, pid));
    let mut m = SysvMessage::with_capacity(32);
    q.receive_message(&mut m, Select::Any).unwrap();
    assert_eq!((m.mtype(), m.text()), (1, &[1u8; 10][..]));
    let st = q.stats().unwrap();
    assert_eq!(
        (st.messages, st.bytes, st.last_receiver),
        (1, 20, std::process::id())
    );
}

#[test]
fn try_forms_sizes_and_types_are_checked() {
    let q = SysvQueue::create(Key::PRIVATE).unwrap();
    let mut buf = [0; 8];
    assert!(matches!(
        q.try_receive(&mut buf, Select::Any),
        Err(Error::WouldBlock)
    ));
    assert!(matches!(
        q.send(0, b"x"),
        Err(Error::InvalidMessageType { mtype: 0 })
    ));
    assert!(matches!(
        q.try_receive(&mut buf, Select::Type(-1)),
        Err(Error::InvalidMessageType { .. })
    ));
    let max = q.stats().unwrap().max_bytes as usize;
    let msgmax: usize = std::fs::read_to_string("/proc/sys/kernel/msgmax")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(matches!(
        q.send(1, &vec![0; msgmax + 1]),
        Err(Error::MessageTooLarge { .. })
    ));
    // Fill the queue's byte budget, then try_send would block.
    let chunk = vec![7; msgmax.min(max)];
    let mut sent = 0;
    while sent + chunk.len() <= max {
        q.try_send(1, &chunk).unwrap();
        sent += chunk.len();
    }
    if sent < max {
        q.try_send(1, &vec![7; max - sent]).unwrap();
    }
    assert!(matches!(q.try_send(1, b"more"), Err(Error::WouldBlock)));
    // A message longer than the buffer stays in the queue.
    let r = q.try_receive(&mut buf, Select::Any);
    assert!(
        matches!(
            r,
            Err(Error::BufferTooSmall {
                len: 8,
                needed: None
            })
        ),
        "{r:?}"
    );
    assert_eq!(q.stats().unwrap().bytes as usize, max);
}

#[test]
fn the_owner_removes_the_queue_an_opener_does_not() {
    let (q, key) = create();
    let opener = SysvQueue::open(key).unwrap();
    assert!(q.is_owner() && !opener.is_owner());
    drop(opener);
    q.send(1, b"still here").unwrap();
    let id = q.id();
    drop(q);
    assert!(matches!(SysvQueue::open(key), Err(Error::NotFound { .. })));
    assert!(matches!(
        SysvQueue::from_id(id),
        Err(Error::NotFound { .. })
    ));
}

#[test]
fn ftok_keys_come_from_a_path() {
    let exe = std::env::current_exe().unwrap();
    let a = Key::from_path(&exe, b'm').unwrap();
    assert_eq!(a, Key::from_path(&exe, b'm').unwrap());
    assert_ne!(a, Key::from_path(&exe, b'n').unwrap());
    assert!(matches!(
        Key::from_path(std::path::Path::new("/nonexistent/ipcrs"), 1),
        Err(Error::NotFound { .. })
    ));
    // A queue under an ftok key: created exclusively, found again through the same path, and
    // removed by its owner. (Another file may map to the same key: then create says so.)
    let key = Key::from_path(&exe, b'q').unwrap();
    match SysvQueue::create(key) {
        Ok(q) => {
            assert!(matches!(
                SysvQueue::create(key),
                Err(Error::AlreadyExists { .. })
            ));
            let again = SysvQueue::open(Key::from_path(&exe, b'q').unwrap()).unwrap();
            assert_eq!(again.id(), q.id());
            assert_eq!(q.stats().unwrap().mode, 0o600);
            drop(again);
            drop(q);
            assert!(matches!(SysvQueue::open(key), Err(Error::NotFound { .. })));
        }
        Err(Error::AlreadyExists { .. }) => eprintln!("ftok key {key:?} is taken; skipped"),
        Err(e) => panic!("{e}"),
    }
}

/// Removes a System V queue by id when dropped (for a queue no handle of this test owns).
pub(crate) struct IdGuard(pub(crate) i32);

impl Drop for IdGuard {
    fn drop(&mut self) {
        let _ = ipc_mq::sysv::remove(self.0);
    }
}

#[test]
fn a_creator_killed_leaves_its_queue_and_messages_until_removed() {
    let _wd = Watchdog::new("killed sysv creator", Duration::from_secs(30));
    if role().as_deref() == Some("creator") {
        let (q, key) = create();
        for t in 1..=3u8 {
            q.send(i64::from(t), &[t; 3]).unwrap();
        }
        crate::ready(&format!("{} {}", key.as_raw(), q.id()));
        // Wait to be killed: stdin is never written to.
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        return;
    }
    let test = test_path!(a_creator_killed_leaves_its_queue_and_messages_until_removed);
    let mut cmd = child(&test, "creator");
    cmd.stdin(std::process::Stdio::piped());
    let (mut kid, line) = crate::spawn_ready(&mut cmd);
    let (key, id) = line.split_once(' ').unwrap();
    let (key, id) = (Key::from(key.parse::<i32>().unwrap()), id.parse().unwrap());
    let _guard = IdGuard(id);
    kid.kill().unwrap();
    let status = kid.wait_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL),
        "{status}"
    );

    let opener = SysvQueue::open(key).unwrap();
    assert_eq!(opener.id(), id);
    assert!(!opener.is_owner());
    let st = opener.stats().unwrap();
    assert_eq!((st.messages, st.bytes), (3, 9));
    drop(opener); // an opener's drop removes nothing
    let q = SysvQueue::open(key).unwrap();
    for t in 1..=3u8 {
        let (m, mtype) = q.try_receive_vec(Select::Any).unwrap();
        assert_eq!((m, mtype), (vec![t; 3], i64::from(t)));
    }
    ipc_mq::sysv::remove(id).unwrap();
    assert!(matches!(SysvQueue::open(key), Err(Error::NotFound { .. })));
    assert!(matches!(q.try_send(1, b"x"), Err(Error::Removed { .. })));
}

#[test]
fn keys_convert_from_numbers_and_private_cannot_be_opened() {
    assert_eq!(Key::from(0x4950_0001), Key::new(0x4950_0001));
    assert_eq!(Key::from(0x4950_0001).as_raw(), 0x4950_0001);
    assert_eq!(Key::from(0), Key::PRIVATE);
    // msgget(IPC_PRIVATE, 0) would create a queue; open refuses instead.
    assert!(matches!(
        SysvQueue::open(Key::PRIVATE),
        Err(Error::NotFound { .. })
    ));
}
