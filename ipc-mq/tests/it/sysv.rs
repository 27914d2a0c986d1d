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

/// In a child: a private IPC namespace (queue ids and `kernel.msgmax` of our own) and a private
/// `/dev/shm` (so companion files of our ids never meet those of the machine's namespace).
fn private_ipc_and_shm() {
    use nix::mount::{MsFlags, mount};
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWIPC | nix::sched::CloneFlags::CLONE_NEWNS)
        .expect("unshare(CLONE_NEWIPC | CLONE_NEWNS)");
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
        "/dev/shm",
        Some("tmpfs"),
        MsFlags::empty(),
        Some("size=1m,mode=1777"),
    )
    .expect("private /dev/shm");
}

fn set_sysctl(name: &str, value: impl std::fmt::Display) {
    std::fs::write(format!("/proc/sys/kernel/{name}"), value.to_string())
        .unwrap_or_else(|e| panic!("{name}: {e}"));
}

#[test]
fn an_owner_leaves_alone_a_new_queue_that_got_its_id_after_its_own_was_removed() {
    let _wd = Watchdog::new("sysv identity", Duration::from_secs(60));
    match role().as_deref() {
        Some("usurper") => {
            // Removes the owner's queue by id and makes a new one that gets the same id.
            let id: i32 = arg_name().parse().unwrap();
            ipc_mq::sysv::remove(id).unwrap();
            set_sysctl("msg_next_id", id);
            let q = SysvQueue::options()
                .on_drop(ipc_mq::OnDrop::Keep)
                .create(Key::new(0x4950_0002))
                .unwrap();
            assert_eq!(q.id(), id, "msg_next_id gave the new queue the old id");
            q.send(1, b"newcomer").unwrap();
            return;
        }
        Some("namespace") => {}
        _ => {
            let test = test_path!(
                an_owner_leaves_alone_a_new_queue_that_got_its_id_after_its_own_was_removed
            );
            ipc_testkit::Proc::spawn(&mut child(&test, "namespace"))
                .unwrap()
                .expect_success(Duration::from_secs(50));
            return;
        }
    }
    private_ipc_and_shm();
    let test =
        test_path!(an_owner_leaves_alone_a_new_queue_that_got_its_id_after_its_own_was_removed);
    for explicit in [false, true] {
        let owner = SysvQueue::create(Key::new(0x4950_0001)).unwrap();
        let id = owner.id();
        ipc_testkit::Proc::spawn(child(&test, "usurper").env(NAME_ENV, id.to_string()))
            .unwrap()
            .expect_success(Duration::from_secs(20));
        if explicit {
            let r = owner.remove();
            assert!(matches!(r, Err(Error::Removed { .. })), "{r:?}");
        } else {
            drop(owner);
        }
        let q = SysvQueue::from_id(id).expect("the newcomer is still there");
        assert_eq!(
            q.try_receive_vec(Select::Any).unwrap(),
            (b"newcomer".to_vec(), 1)
        );
        ipc_mq::sysv::remove_stale(Key::new(0x4950_0002)).unwrap();
    }
}

#[test]
fn kernel_msgmax_and_the_queue_size_are_honoured_as_they_are_now() {
    let _wd = Watchdog::new("sysv sizes", Duration::from_secs(60));
    if role().as_deref() != Some("namespace") {
        let test = test_path!(kernel_msgmax_and_the_queue_size_are_honoured_as_they_are_now);
        ipc_testkit::Proc::spawn(&mut child(&test, "namespace"))
            .unwrap()
            .expect_success(Duration::from_secs(50));
        return;
    }
    private_ipc_and_shm();
    // A message longer than the whole queue (msg_qbytes 16384) could never be sent: a blocking
    // send says so instead of waiting forever.
    set_sysctl("msgmax", 65536);
    let q = SysvQueue::create(Key::PRIVATE).unwrap();
    let qbytes = q.stats().unwrap().max_bytes as usize;
    let big = vec![1; qbytes + 1];
    for r in [q.send(1, &big), q.try_send(1, &big)] {
        assert!(
            matches!(r, Err(Error::MessageTooLarge { len, max }) if len == qbytes + 1 && max == qbytes),
            "{r:?}"
        );
    }
    // msgmax raised after a receiver opened: it still receives the longer messages, into a
    // Vec and into buffers of exactly their length (or says a shorter one is too small).
    set_sysctl("msgmax", 8192);
    let r = SysvQueue::from_id(q.id()).unwrap();
    set_sysctl("msgmax", 12000);
    let sender = SysvQueue::from_id(q.id()).unwrap();
    sender.send(1, &[7; 10_000]).unwrap();
    assert_eq!(r.receive_vec(Select::Any).unwrap(), (vec![7; 10_000], 1));
    sender.send(2, &[8; 10_000]).unwrap();
    let mut short = vec![0; 9_999];
    assert!(matches!(
        r.try_receive(&mut short, Select::Any),
        Err(Error::BufferTooSmall { len: 9_999, .. })
    ));
    let mut exact = vec![0; 10_000];
    assert_eq!(r.receive(&mut exact, Select::Any).unwrap(), (10_000, 2));
    assert_eq!(exact, vec![8; 10_000]);
    sender.send(3, &[9; 10_000]).unwrap();
    let mut roomy = vec![0; 20_000];
    assert_eq!(r.receive(&mut roomy, Select::Type(3)).unwrap(), (10_000, 3));
    assert_eq!(roomy[..10_000], [9; 10_000]);
    // msgmax lowered after the sender opened: too large, not "removed".
    set_sysctl("msgmax", 100);
    let s = sender.send(1, &[0; 200]);
    assert!(
        matches!(s, Err(Error::MessageTooLarge { len: 200, max: 100 })),
        "{s:?}"
    );
    sender.send(1, &[0; 100]).unwrap();
    assert_eq!(r.receive_vec(Select::Any).unwrap().0.len(), 100);
}

#[test]
fn timed_waits_end_at_their_deadline_or_take_what_arrives() {
    let _wd = Watchdog::new("sysv timeouts", Duration::from_secs(60));
    if role().as_deref() == Some("late sender") {
        let q = SysvQueue::from_id(arg_name().parse().unwrap()).unwrap();
        q.send(5, b"late").unwrap();
        return;
    }
    let q = SysvQueue::create(Key::PRIVATE).unwrap();
    let mut buf = [0; 16];
    let t = std::time::Instant::now();
    let r = q.receive_timeout(&mut buf, Select::Any, Duration::from_millis(100));
    let took = t.elapsed();
    assert!(matches!(r, Err(Error::TimedOut)), "{r:?}");
    assert!(took >= Duration::from_millis(100), "{took:?}");
    assert!(matches!(
        q.receive_vec_timeout(Select::Any, Duration::ZERO),
        Err(Error::TimedOut)
    ));
    let test = test_path!(timed_waits_end_at_their_deadline_or_take_what_arrives);
    let kid =
        ipc_testkit::Proc::spawn(child(&test, "late sender").env(NAME_ENV, q.id().to_string()))
            .unwrap();
    let (m, t) = q
        .receive_vec_timeout(Select::Type(5), Duration::from_secs(30))
        .unwrap();
    assert_eq!((m.as_slice(), t), (&b"late"[..], 5));
    kid.expect_success(Duration::from_secs(20));
    // Full: send_timeout times out.
    let max = q.stats().unwrap().max_bytes as usize;
    let msgmax: usize = std::fs::read_to_string("/proc/sys/kernel/msgmax")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let chunk = vec![1; msgmax.min(max)];
    while q.try_send(1, &chunk).is_ok() {}
    let t = std::time::Instant::now();
    let r = q.send_timeout(1, &chunk, Duration::from_millis(50));
    assert!(matches!(r, Err(Error::TimedOut)), "{r:?}");
    assert!(t.elapsed() >= Duration::from_millis(50));
}
