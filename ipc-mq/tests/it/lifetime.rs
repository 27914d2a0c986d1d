//! The lifetime model across real processes: owners, openers, `OnDrop::Keep`, `remove_stale`
//! (owner alive, killed, a zombie, dropped with Keep), identity (a name re-created by someone
//! else is left alone), `open_or_create`, `replace_stale`.

use std::io::BufRead;
use std::process::Stdio;
use std::time::{Duration, Instant};

use ipc_mq::{Access, Error, Key, MessageQueue, OnDrop, Opened, OwnerCheck, Select, SysvQueue};
use ipc_testkit::{Proc, Watchdog, child, fnv1a64, posix_name, role, sysv_key, test_path};

use crate::{NAME_ENV, NameGuard, arg_name, ready, spawn_ready};

/// A job: its number, some bytes that depend on it, and their checksum.
fn job(n: u64) -> Vec<u8> {
    let mut m = n.to_le_bytes().to_vec();
    m.extend((0..(n % 40)).map(|i| (n * 31 + i) as u8));
    let sum = fnv1a64(&m);
    m.extend_from_slice(&sum.to_le_bytes());
    m
}

/// The number of a job whose checksum holds.
fn check_job(m: &[u8]) -> u64 {
    assert!(m.len() >= 16, "job of {} bytes", m.len());
    let (body, sum) = m.split_at(m.len() - 8);
    assert_eq!(fnv1a64(body), u64::from_le_bytes(sum.try_into().unwrap()));
    u64::from_le_bytes(body[..8].try_into().unwrap())
}

const JOBS: u64 = 8;

#[test]
fn a_producer_that_keeps_its_queue_leaves_every_job_to_a_consumer_started_after_it_exited() {
    let _wd = Watchdog::new("decoupled in time", Duration::from_secs(60));
    match role().as_deref() {
        Some("producer") => {
            let q = MessageQueue::options()
                .max_messages(JOBS)
                .message_size(64)
                .access(Access::Send)
                .on_drop(OnDrop::Keep)
                .create(&arg_name())
                .unwrap();
            for n in 0..JOBS {
                q.send(&job(n), 0).unwrap();
            }
            return; // drops the owner: kept
        }
        Some("consumer") => {
            let q = MessageQueue::open(&arg_name(), Access::Receive).unwrap();
            for n in 0..JOBS {
                let (m, _) = q.receive_vec_timeout(Duration::from_secs(10)).unwrap();
                assert_eq!(check_job(&m), n, "jobs in order, each once");
            }
            assert!(matches!(q.try_receive_vec(), Err(Error::WouldBlock)));
            drop(q);
            ipc_mq::remove_stale(&arg_name()).unwrap();
            return;
        }
        _ => {}
    }
    let test = test_path!(
        a_producer_that_keeps_its_queue_leaves_every_job_to_a_consumer_started_after_it_exited
    );
    let name = posix_name("keep");
    let _guard = NameGuard(name.clone());
    Proc::spawn(child(&test, "producer").env(NAME_ENV, &name))
        .unwrap()
        .expect_success(Duration::from_secs(30));
    // The producer is gone; its queue and jobs are not.
    assert_eq!(
        MessageQueue::open(&name, Access::Receive)
            .unwrap()
            .len()
            .unwrap(),
        JOBS
    );
    Proc::spawn(child(&test, "consumer").env(NAME_ENV, &name))
        .unwrap()
        .expect_success(Duration::from_secs(30));
    let r = MessageQueue::open(&name, Access::Receive);
    assert!(matches!(r, Err(Error::NotFound { .. })), "{r:?}");
}

/// In a child role: creates the queue the parent named (POSIX, or System V if the name is a
/// number), says `ready` with the System V id, and waits for its standard input to close.
fn owner_role() {
    let name = arg_name();
    let keep = std::env::var("IPC_MQ_TEST_KEEP").is_ok();
    let on_drop = if keep { OnDrop::Keep } else { OnDrop::Remove };
    let line = &mut String::new();
    if let Ok(key) = name.parse::<i32>() {
        let q = SysvQueue::options()
            .on_drop(on_drop)
            .create(Key::new(key))
            .unwrap();
        q.send(1, b"owned").unwrap();
        ready(&q.id().to_string());
        let _ = std::io::stdin().lock().read_line(line);
    } else {
        let q = MessageQueue::options()
            .max_messages(1)
            .message_size(16)
            .on_drop(on_drop)
            .create(&name)
            .unwrap();
        q.send(b"owned", 0).unwrap();
        ready("0");
        let _ = std::io::stdin().lock().read_line(line);
    }
}

/// Starts an owner of `name` in a child (see [`owner_role`]); returns it and its System V id.
fn spawn_owner(test: &str, name: &str, keep: bool) -> (Proc, i32) {
    let mut cmd = child(test, "owner");
    cmd.env(NAME_ENV, name).stdin(Stdio::piped());
    if keep {
        cmd.env("IPC_MQ_TEST_KEEP", "1");
    }
    let (p, id) = spawn_ready(&mut cmd);
    (p, id.parse().unwrap())
}

/// Waits (bounded) until process `pid` is a zombie: dead, not yet reaped.
fn until_zombie(pid: u32) {
    let t = Instant::now();
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let state = stat.rsplit_once(')').unwrap().1.trim_start().chars().next();
        if state == Some('Z') {
            return;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "{pid} never died");
        std::thread::yield_now();
    }
}

fn ends_normally(mut p: Proc) {
    drop(p.inner().stdin.take());
    let status = p.wait_timeout(Duration::from_secs(20)).unwrap();
    assert!(status.success(), "{status}");
}

fn killed(mut p: Proc) {
    p.kill().unwrap();
    let status = p.wait_timeout(Duration::from_secs(20)).unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
}

#[test]
fn remove_stale_refuses_a_live_owner_and_removes_a_killed_a_zombie_or_a_kept_one() {
    let _wd = Watchdog::new("remove_stale", Duration::from_secs(90));
    if role().as_deref() == Some("owner") {
        owner_role();
        return;
    }
    let test =
        test_path!(remove_stale_refuses_a_live_owner_and_removes_a_killed_a_zombie_or_a_kept_one);
    let name = posix_name("stale");
    let _guard = NameGuard(name.clone());

    // Alive: refused, and the queue is untouched.
    let (owner, _) = spawn_owner(&test, &name, false);
    let r = ipc_mq::remove_stale(&name);
    assert!(
        matches!(&r, Err(Error::OwnerAlive { name: n }) if *n == name),
        "{r:?}"
    );
    assert!(r.unwrap_err().to_string().contains(&name));
    assert_eq!(
        MessageQueue::open(&name, Access::Receive)
            .unwrap()
            .len()
            .unwrap(),
        1
    );
    // Killed: stale.
    killed(owner);
    ipc_mq::remove_stale(&name).unwrap();
    assert!(matches!(
        MessageQueue::open(&name, Access::Both),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        ipc_mq::remove_stale(&name),
        Err(Error::NotFound { .. })
    ));

    // A zombie (killed, not yet reaped) holds no lock.
    let (mut owner, _) = spawn_owner(&test, &name, false);
    assert!(matches!(
        ipc_mq::remove_stale(&name),
        Err(Error::OwnerAlive { .. })
    ));
    owner.kill().unwrap();
    until_zombie(owner.id());
    ipc_mq::remove_stale(&name).unwrap();
    owner.wait_timeout(Duration::from_secs(20)).unwrap();

    // Re-created under the same name by a new owner: alive again.
    let (owner, _) = spawn_owner(&test, &name, true);
    assert!(matches!(
        ipc_mq::remove_stale(&name),
        Err(Error::OwnerAlive { .. })
    ));
    // That owner kept its queue and exited normally: stale, with its message still there.
    ends_normally(owner);
    assert_eq!(
        MessageQueue::open(&name, Access::Receive)
            .unwrap()
            .try_receive_vec()
            .unwrap()
            .0,
        b"owned"
    );
    ipc_mq::remove_stale(&name).unwrap();
    assert!(matches!(
        MessageQueue::open(&name, Access::Both),
        Err(Error::NotFound { .. })
    ));

    // An owner dropped normally (Remove) leaves nothing.
    let (owner, _) = spawn_owner(&test, &name, false);
    ends_normally(owner);
    assert!(matches!(
        ipc_mq::remove_stale(&name),
        Err(Error::NotFound { .. })
    ));
}

#[test]
fn sysv_remove_stale_refuses_a_live_owner_and_removes_a_killed_a_zombie_or_a_kept_one() {
    let _wd = Watchdog::new("sysv remove_stale", Duration::from_secs(90));
    if role().as_deref() == Some("owner") {
        owner_role();
        return;
    }
    let test = test_path!(
        sysv_remove_stale_refuses_a_live_owner_and_removes_a_killed_a_zombie_or_a_kept_one
    );
    let companion = |id: i32| std::path::PathBuf::from(format!("/dev/shm/ipc-sysv-msg-{id}.owner"));
    let key = Key::new(sysv_key());
    let name = key.as_raw().to_string();

    let (owner, id) = spawn_owner(&test, &name, false);
    let _guard = crate::sysv::IdGuard(id);
    assert!(companion(id).is_file(), "the owner's companion file");
    let r = ipc_mq::sysv::remove_stale(key);
    assert!(matches!(&r, Err(Error::OwnerAlive { .. })), "{r:?}");
    assert!(r.unwrap_err().to_string().contains(&key.to_string()));
    assert_eq!(SysvQueue::open(key).unwrap().stats().unwrap().messages, 1);
    killed(owner);
    ipc_mq::sysv::remove_stale(key).unwrap();
    assert!(matches!(SysvQueue::open(key), Err(Error::NotFound { .. })));
    assert!(!companion(id).exists(), "removed with the queue");

    let (mut owner, id) = spawn_owner(&test, &name, false);
    let _guard = crate::sysv::IdGuard(id);
    owner.kill().unwrap();
    until_zombie(owner.id());
    ipc_mq::sysv::remove_stale(key).unwrap();
    assert!(!companion(id).exists());
    owner.wait_timeout(Duration::from_secs(20)).unwrap();

    let (owner, id) = spawn_owner(&test, &name, true);
    let _guard = crate::sysv::IdGuard(id);
    assert!(matches!(
        ipc_mq::sysv::remove_stale(key),
        Err(Error::OwnerAlive { .. })
    ));
    ends_normally(owner);
    let (m, t) = SysvQueue::open(key)
        .unwrap()
        .try_receive_vec(Select::Any)
        .unwrap();
    assert_eq!((m.as_slice(), t), (&b"owned"[..], 1));
    ipc_mq::sysv::remove_stale(key).unwrap();
    assert!(!companion(id).exists());

    // A queue without a companion file (made by a program that does not use this crate, or
    // after its file was removed) counts as stale.
    let q = SysvQueue::create(key).unwrap();
    let id = q.id();
    std::fs::remove_file(companion(id)).unwrap();
    ipc_mq::sysv::remove_stale(key).unwrap();
    drop(q); // its companion is not there: it removes nothing (the id is gone anyway)
    assert!(matches!(SysvQueue::open(key), Err(Error::NotFound { .. })));
    assert!(matches!(
        ipc_mq::sysv::remove_stale(Key::PRIVATE),
        Err(Error::NotFound { .. })
    ));
}

#[test]
fn an_owner_leaves_alone_a_queue_re_created_under_its_name_by_another_process() {
    let _wd = Watchdog::new("identity", Duration::from_secs(60));
    if role().as_deref() == Some("usurper") {
        // Unlinks the owner's name and puts a queue of its own there, kept after it exits.
        let name = arg_name();
        ipc_mq::unlink(&name).unwrap();
        let q = MessageQueue::options()
            .max_messages(1)
            .message_size(16)
            .on_drop(OnDrop::Keep)
            .create(&name)
            .unwrap();
        q.send(b"newcomer", 0).unwrap();
        return;
    }
    let test =
        test_path!(an_owner_leaves_alone_a_queue_re_created_under_its_name_by_another_process);
    let usurp = |name: &str| {
        Proc::spawn(child(&test, "usurper").env(NAME_ENV, name))
            .unwrap()
            .expect_success(Duration::from_secs(30));
    };
    let newcomer_is_there = |name: &str| {
        let q = MessageQueue::open(name, Access::Receive).unwrap();
        assert_eq!(q.try_receive_vec().unwrap().0, b"newcomer");
    };

    // Dropped: the newcomer stays.
    let name = posix_name("ident");
    let _guard = NameGuard(name.clone());
    let owner = MessageQueue::create(&name, 1, 16).unwrap();
    usurp(&name);
    drop(owner);
    newcomer_is_there(&name);
    ipc_mq::remove_stale(&name).unwrap();

    // Removed explicitly: says its queue is gone, and the newcomer stays.
    let name = posix_name("ident");
    let _guard = NameGuard(name.clone());
    let owner = MessageQueue::create(&name, 1, 16).unwrap();
    usurp(&name);
    let r = owner.remove();
    assert!(
        matches!(&r, Err(Error::Removed { name: n }) if *n == name),
        "{r:?}"
    );
    newcomer_is_there(&name);
    ipc_mq::remove_stale(&name).unwrap();
}

#[test]
fn owners_openers_persist_and_remove() {
    let name = posix_name("own");
    let _guard = NameGuard(name.clone());
    let mut owner = MessageQueue::create(&name, 1, 8).unwrap();
    let opener = MessageQueue::open(&name, Access::Send).unwrap();
    assert!(owner.is_owner() && !opener.is_owner());
    assert_eq!(opener.name(), Some(name.as_str()));
    let r = opener.remove();
    assert!(
        matches!(&r, Err(Error::NotOwner { name: n }) if *n == name),
        "{r:?}"
    );
    assert!(r.unwrap_err().to_string().contains("remove_stale"));
    // The opener's remove removed nothing.
    assert!(matches!(
        ipc_mq::remove_stale(&name),
        Err(Error::OwnerAlive { .. })
    ));
    // Persisted: still the owner until dropped (its lock held: not stale while it works),
    // then the queue stays, ownerless, for a late consumer.
    owner.persist();
    assert!(owner.is_owner());
    assert!(matches!(
        ipc_mq::remove_stale(&name),
        Err(Error::OwnerAlive { .. })
    ));
    owner.send(b"still", 1).unwrap();
    drop(owner);
    let late = MessageQueue::open(&name, Access::Both).unwrap();
    assert_eq!(late.receive_vec().unwrap(), (b"still".to_vec(), 1));
    ipc_mq::remove_stale(&name).unwrap();
    drop(late);

    // Kept: an owner until dropped; `remove` still removes.
    let keeper = MessageQueue::options()
        .max_messages(1)
        .message_size(8)
        .on_drop(OnDrop::Keep)
        .create(&name)
        .unwrap();
    assert!(keeper.is_owner());
    assert!(matches!(
        ipc_mq::remove_stale(&name),
        Err(Error::OwnerAlive { .. })
    ));
    keeper.remove().unwrap();
    assert!(matches!(
        MessageQueue::open(&name, Access::Both),
        Err(Error::NotFound { .. })
    ));

    // An owner turned into a descriptor keeps the queue; the owner lock travels with the
    // descriptor, and goes when the last copy is closed.
    let q = MessageQueue::create(&name, 1, 8).unwrap();
    let fd = std::os::fd::OwnedFd::from(q);
    assert!(matches!(
        ipc_mq::remove_stale(&name),
        Err(Error::OwnerAlive { .. })
    ));
    let q = MessageQueue::from_fd(fd).unwrap();
    assert!(!q.is_owner() && q.name().is_none());
    assert!(matches!(q.remove(), Err(Error::NotOwner { .. })));
    ipc_mq::remove_stale(&name).unwrap();
}

#[test]
fn open_or_create_says_which_it_did_and_the_existing_size_wins() {
    let name = posix_name("ooc");
    let (owner, how) = MessageQueue::open_or_create(&name, 2, 32).unwrap();
    assert_eq!((how, owner.is_owner()), (Opened::Created, true));
    let (other, how) = MessageQueue::options()
        .max_messages(1)
        .message_size(8)
        .access(Access::Send)
        .open_or_create(&name)
        .unwrap();
    assert_eq!((how, other.is_owner()), (Opened::Existing, false));
    assert_eq!(other.message_size(), 32);
    other.send(&[1; 32], 0).unwrap();
    assert_eq!(owner.receive_vec().unwrap().0, vec![1; 32]);
    drop(other);
    drop(owner);
    assert!(matches!(
        MessageQueue::open(&name, Access::Both),
        Err(Error::NotFound { .. })
    ));

    let key = Key::new(sysv_key());
    let (s, how) = SysvQueue::open_or_create(key).unwrap();
    assert_eq!((how, s.is_owner()), (Opened::Created, true));
    let (t, how) = SysvQueue::open_or_create(key).unwrap();
    assert_eq!(
        (how, t.is_owner(), t.id()),
        (Opened::Existing, false, s.id())
    );
    let (p, how) = SysvQueue::open_or_create(Key::PRIVATE).unwrap();
    assert_eq!(how, Opened::Created);
    assert_ne!(p.id(), s.id());
}

#[test]
fn replace_stale_takes_over_a_dead_owners_name_but_not_a_live_ones() {
    let _wd = Watchdog::new("replace_stale", Duration::from_secs(60));
    if role().as_deref() == Some("owner") {
        owner_role();
        return;
    }
    let test = test_path!(replace_stale_takes_over_a_dead_owners_name_but_not_a_live_ones);
    let name = posix_name("repl");
    let _guard = NameGuard(name.clone());
    let opts = MessageQueue::options()
        .max_messages(1)
        .message_size(16)
        .replace_stale();
    let (owner, _) = spawn_owner(&test, &name, false);
    assert!(matches!(opts.create(&name), Err(Error::OwnerAlive { .. })));
    // open_or_create opens a live one.
    let (q, how) = opts.open_or_create(&name).unwrap();
    assert_eq!(how, Opened::Existing);
    drop(q);
    killed(owner);
    assert!(matches!(
        MessageQueue::create(&name, 1, 16),
        Err(Error::AlreadyExists { .. })
    ));
    let q = opts.create(&name).unwrap();
    assert!(q.is_owner());
    assert!(q.is_empty().unwrap(), "a new queue, not the dead owner's");

    let key = Key::new(sysv_key());
    let (owner, id) = spawn_owner(&test, &key.as_raw().to_string(), false);
    let _g = crate::sysv::IdGuard(id);
    let sopts = SysvQueue::options().replace_stale();
    assert!(matches!(sopts.create(key), Err(Error::OwnerAlive { .. })));
    killed(owner);
    let s = sopts.create(key).unwrap();
    assert_ne!(s.id(), id);
    assert_eq!(s.stats().unwrap().messages, 0);
}

#[test]
fn errors_name_the_queue_and_say_the_usual_fix() {
    let name = posix_name("names");
    let e = MessageQueue::open(&name, Access::Both).unwrap_err();
    let text = e.to_string();
    assert!(
        matches!(&e, Error::NotFound { name: n } if *n == name),
        "{e:?}"
    );
    assert!(
        text.contains(&name) && text.contains("open_or_create"),
        "{text}"
    );
    let _q = MessageQueue::create(&name, 1, 8).unwrap();
    let text = MessageQueue::create(&name, 1, 8).unwrap_err().to_string();
    assert!(
        text.contains(&name) && text.contains("remove_stale"),
        "{text}"
    );
    let text = ipc_mq::unlink("/a/b").unwrap_err().to_string();
    assert!(text.contains("\"/a/b\"") && text.contains('/'), "{text}");
    let text = Error::WrongOwner {
        name: name.clone(),
        expected: 1000,
        found: 0,
    }
    .to_string();
    assert!(
        text.contains(&name) && text.contains("owner_check(OwnerCheck::AnyUid)"),
        "{text}"
    );
    for e in [
        MessageQueue::create("/", 1, 8).unwrap_err(),
        Error::InvalidMode { mode: 0o4600 },
    ] {
        let text = e.to_string();
        assert!(
            !text.ends_with('.') && text.starts_with(char::is_lowercase),
            "{text}"
        );
    }

    // System V: "key 0x…" before the queue is found, "id N" after.
    let key = Key::new(sysv_key());
    let text = SysvQueue::open(key).unwrap_err().to_string();
    assert!(
        text.contains(&format!("key {:#010x}", key.as_raw())),
        "{text}"
    );
    let q = SysvQueue::create(key).unwrap();
    let text = SysvQueue::create(key).unwrap_err().to_string();
    assert!(
        text.contains(&format!("key {:#010x}", key.as_raw())) && text.contains("remove_stale"),
        "{text}"
    );
    let id = q.id();
    ipc_mq::sysv::remove(id).unwrap();
    let e = q.try_send(1, b"x").unwrap_err();
    assert!(
        matches!(&e, Error::Removed { name } if *name == format!("id {id}")),
        "{e:?}"
    );
    assert!(e.to_string().contains(&format!("id {id}")));
    let e = ipc_mq::sysv::remove(id).unwrap_err();
    assert!(matches!(&e, Error::NotFound { .. }), "{e:?}");
    assert!(e.to_string().contains(&format!("id {id}")));
}

#[test]
fn invalid_modes_are_refused_before_anything_is_created() {
    let name = posix_name("mode");
    for mode in [0o1600, 0o4600, 0o10_0600, u32::MAX] {
        let r = MessageQueue::options().mode(mode).create(&name);
        assert!(
            matches!(r, Err(Error::InvalidMode { mode: m }) if m == mode),
            "{r:?}"
        );
        let r = MessageQueue::options().mode(mode).open_or_create(&name);
        assert!(matches!(r, Err(Error::InvalidMode { .. })), "{r:?}");
        let r = SysvQueue::options().mode(mode).create(Key::PRIVATE);
        assert!(matches!(r, Err(Error::InvalidMode { .. })), "{r:?}");
    }
    assert!(matches!(
        MessageQueue::open(&name, Access::Both),
        Err(Error::NotFound { .. })
    ));
    let q = SysvQueue::options()
        .mode(0o640)
        .create(Key::PRIVATE)
        .unwrap();
    assert_eq!(q.stats().unwrap().mode, 0o640);
}

#[test]
fn a_mode_without_the_owners_read_bit_is_still_removed_by_its_owner() {
    let _wd = Watchdog::new("unreadable owner", Duration::from_secs(30));
    if role().as_deref() == Some("nobody") {
        nix::unistd::setgid(nix::unistd::Gid::from_raw(65534)).unwrap();
        nix::unistd::setuid(nix::unistd::Uid::from_raw(65534)).unwrap();
        for (i, mode) in [0o200, 0o000, 0o400].into_iter().enumerate() {
            let name = format!("{}-{i}", arg_name());
            let q = MessageQueue::options()
                .max_messages(1)
                .message_size(8)
                .access(Access::Send)
                .mode(mode)
                .create(&name)
                .unwrap();
            assert_eq!(rustix::fs::fstat(&q).unwrap().st_mode & 0o777, mode);
            drop(q);
            // Gone (as root could see; here: the name is free again).
            drop(MessageQueue::create(&name, 1, 8).unwrap());
        }
        return;
    }
    let test = test_path!(a_mode_without_the_owners_read_bit_is_still_removed_by_its_owner);
    let name = posix_name("unread");
    let guards: Vec<_> = (0..3).map(|i| NameGuard(format!("{name}-{i}"))).collect();
    Proc::spawn(child(&test, "nobody").env(NAME_ENV, &name))
        .unwrap()
        .expect_success(Duration::from_secs(20));
    for g in &guards {
        assert!(matches!(
            MessageQueue::options()
                .owner_check(OwnerCheck::AnyUid)
                .open(&g.0),
            Err(Error::NotFound { .. })
        ));
    }
}

#[test]
fn no_queue_descriptor_reaches_a_child_spawned_concurrently() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let _wd = Watchdog::new("concurrent spawn", Duration::from_secs(120));
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicU64::new(0));
    // Every call of the crate that opens a descriptor, over and over, in another thread.
    let churn = {
        let (stop, rounds) = (Arc::clone(&stop), Arc::clone(&rounds));
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let name = posix_name("cx");
                let q = MessageQueue::create(&name, 1, 8).unwrap();
                let o = MessageQueue::open(&name, Access::Send).unwrap();
                let (e, _) = MessageQueue::open_or_create(&name, 1, 8).unwrap();
                assert!(matches!(
                    ipc_mq::remove_stale(&name),
                    Err(Error::OwnerAlive { .. })
                ));
                drop((o, e));
                drop(q); // the identity check opens the name again
                let kept = posix_name("cx");
                drop(
                    MessageQueue::options()
                        .max_messages(1)
                        .message_size(8)
                        .on_drop(OnDrop::Keep)
                        .replace_stale()
                        .create(&kept)
                        .unwrap(),
                );
                ipc_mq::remove_stale(&kept).unwrap();
                let key = Key::new(sysv_key());
                if let Ok(s) = SysvQueue::create(key) {
                    let t = SysvQueue::open(key).unwrap();
                    assert!(matches!(
                        ipc_mq::sysv::remove_stale(key),
                        Err(Error::OwnerAlive { .. })
                    ));
                    drop((t, s));
                }
                let p = SysvQueue::options()
                    .on_drop(OnDrop::Keep)
                    .create(Key::PRIVATE)
                    .unwrap();
                let id = p.id();
                drop(p);
                ipc_mq::sysv::remove(id).unwrap();
                rounds.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let mut spawned = 0;
    let t = Instant::now();
    while spawned < 150 || rounds.load(Ordering::SeqCst) < 20 {
        assert!(t.elapsed() < Duration::from_secs(90), "too slow");
        let out = std::process::Command::new("/bin/ls")
            .args(["-l", "/proc/self/fd/"])
            .stderr(Stdio::null())
            .output()
            .unwrap();
        let listing = String::from_utf8_lossy(&out.stdout);
        assert!(
            !listing.contains("ipcrs-cx") && !listing.contains("ipc-sysv-msg"),
            "a child inherited a queue descriptor:\n{listing}"
        );
        spawned += 1;
    }
    stop.store(true, Ordering::SeqCst);
    churn.join().unwrap();
}
