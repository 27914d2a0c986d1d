//! The lifetime model: owners and openers, `OnDrop`, `persist`, `remove`, `remove_stale` and
//! `replace_stale`, with liveness checked across real processes (alive, killed, a zombie,
//! kept and exited, re-created, held by a forked child).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipc_fifo::{
    Error, Fifo, FifoReader, FifoWriter, KeepAlive, OnDrop, Opened, OwnerCheck, PrivateDir,
    RecordReader,
};
use ipc_testkit::{Proc, Watchdog, child, role, test_path};

use crate::{CHILD_LIMIT, PATH_ENV, child_path, expect_line, ino, lock_held, say, spawn_piped};

/// The owner's lock, seen from outside: on the FIFO's directory at its inode number.
fn owner_lock_held(path: &Path) -> bool {
    lock_held(path.parent().unwrap(), ino(path))
}

/// Child side: blocks until the parent closes our stdin (or dies), bounded by the parent.
fn hold_until_released() {
    let mut buf = [0u8; 16];
    while std::io::stdin().read(&mut buf).unwrap_or(0) > 0 {}
}

/// Child role: creates the FIFO at the path (with `OnDrop` from the role), says "made", and
/// holds it until released; then drops it normally.
fn owner_role(on_drop: OnDrop) {
    let fifo = Fifo::options()
        .on_drop(on_drop)
        .create(child_path())
        .unwrap();
    assert!(fifo.is_owner());
    say("made");
    hold_until_released();
    drop(fifo);
}

fn spawn_owner(test: &str, role: &str, path: &Path) -> Proc {
    let mut cmd = child(test, role);
    cmd.env(PATH_ENV, path).stdin(std::process::Stdio::piped());
    let mut p = spawn_piped(&mut cmd);
    expect_line(&mut p, "made");
    p
}

#[test]
fn remove_stale_refuses_a_live_owner_and_removes_after_it_was_killed() {
    if role().as_deref() == Some("owner") {
        return owner_role(OnDrop::Remove);
    }
    let _wd = Watchdog::new("stale_after_kill", Duration::from_secs(60));
    let dir = crate::place();
    let path = dir.join("srv").unwrap();
    let me = test_path!(remove_stale_refuses_a_live_owner_and_removes_after_it_was_killed);
    let mut owner = spawn_owner(&me, "owner", &path);
    assert!(owner_lock_held(&path));
    match ipc_fifo::remove_stale(&path) {
        Err(Error::OwnerAlive { path: p }) => assert_eq!(p, path),
        other => panic!("{other:?}"),
    }
    assert!(path.exists());
    // A create that would take over a stale FIFO refuses too; open_or_create opens it.
    assert!(matches!(
        Fifo::options().replace_stale().create(&path),
        Err(Error::OwnerAlive { .. })
    ));
    let (f, how) = Fifo::options()
        .replace_stale()
        .open_or_create(&path)
        .unwrap();
    assert_eq!(how, Opened::Existing);
    assert!(!f.is_owner());
    drop(f);
    assert!(path.exists());

    owner.kill().unwrap();
    assert!(!owner.wait_timeout(CHILD_LIMIT).unwrap().success());
    assert!(path.exists(), "a killed owner removes nothing");
    assert!(!owner_lock_held(&path));
    ipc_fifo::remove_stale(&path).unwrap();
    assert!(!path.exists());
    assert!(matches!(
        ipc_fifo::remove_stale(&path),
        Err(Error::NotFound {
            dir_exists: true,
            ..
        })
    ));
}

/// Whether process `pid` is a zombie (`Z` in `/proc/PID/stat`).
fn is_zombie(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // "pid (comm) S ...": the state follows the last ')'.
    let state = stat.rsplit(')').next().unwrap().split_whitespace().next();
    state == Some("Z")
}

#[test]
fn a_zombie_owner_holds_no_lock() {
    if role().as_deref() == Some("owner") {
        return owner_role(OnDrop::Remove);
    }
    use rustix::process::{Pid, WaitId, WaitIdOptions, waitid};
    let _wd = Watchdog::new("zombie", Duration::from_secs(60));
    let dir = crate::place();
    let path = dir.join("srv").unwrap();
    let mut owner = spawn_owner(&test_path!(a_zombie_owner_holds_no_lock), "owner", &path);
    let pid = owner.id();
    owner.kill().unwrap();
    // Wait for it to die without reaping it: it stays a zombie.
    let p = Pid::from_raw(pid as i32).unwrap();
    waitid(
        WaitId::Pid(p),
        WaitIdOptions::EXITED | WaitIdOptions::NOWAIT,
    )
    .unwrap();
    assert!(is_zombie(pid), "not a zombie");
    ipc_fifo::remove_stale(&path).unwrap();
    assert!(!path.exists());
    assert!(is_zombie(pid), "reaped too early: the test proved nothing");
    assert!(!owner.wait_timeout(CHILD_LIMIT).unwrap().success());
}

#[test]
fn an_owner_that_kept_its_fifo_and_exited_leaves_it_ownerless() {
    if role().as_deref() == Some("keeper") {
        return owner_role(OnDrop::Keep);
    }
    let _wd = Watchdog::new("kept", Duration::from_secs(60));
    let dir = crate::place();
    let path = dir.join("kept").unwrap();
    let mut keeper = spawn_owner(
        &test_path!(an_owner_that_kept_its_fifo_and_exited_leaves_it_ownerless),
        "keeper",
        &path,
    );
    // Kept, but its owner lives: not stale.
    assert!(matches!(
        ipc_fifo::remove_stale(&path),
        Err(Error::OwnerAlive { .. })
    ));
    drop(keeper.inner().stdin.take());
    assert!(keeper.wait_timeout(CHILD_LIMIT).unwrap().success());
    assert!(path.exists(), "OnDrop::Keep leaves the FIFO");
    assert!(!owner_lock_held(&path));
    ipc_fifo::remove_stale(&path).unwrap();
    assert!(!path.exists());
}

#[test]
fn a_fifo_recreated_under_the_name_is_judged_and_kept_on_its_own() {
    if role().as_deref() == Some("owner") {
        return owner_role(OnDrop::Remove);
    }
    let _wd = Watchdog::new("recreated", Duration::from_secs(60));
    let dir = crate::place();
    let path = dir.join("name").unwrap();
    let mut first = spawn_owner(
        &test_path!(a_fifo_recreated_under_the_name_is_judged_and_kept_on_its_own),
        "owner",
        &path,
    );
    // Someone else unlinks the owner's FIFO and makes one of their own (no owner lock): the
    // live owner of the old one does not make the new one alive.
    ipc_fifo::unlink(&path).unwrap();
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        &path,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .unwrap();
    ipc_fifo::remove_stale(&path).unwrap();
    assert!(!path.exists());
    // Another process's owner now has the name; the first owner's drop leaves it alone.
    let newcomer = Fifo::create(&path).unwrap();
    let newcomer_ino = ino(&path);
    drop(first.inner().stdin.take());
    assert!(first.wait_timeout(CHILD_LIMIT).unwrap().success());
    assert_eq!(
        ino(&path),
        newcomer_ino,
        "the first owner removed the newcomer's FIFO"
    );
    assert!(matches!(
        ipc_fifo::remove_stale(&path),
        Err(Error::OwnerAlive { .. })
    ));
    drop(newcomer);
    assert!(!path.exists());
}

/// Child role: creates the owner, forks a child that keeps the inherited handle (it only
/// waits for our stdin to close, then closes every descriptor and exits: async-signal-safe
/// calls only), says "made", and waits to be killed.
#[allow(unsafe_code)]
fn forking_owner_role() {
    let fifo = Fifo::create(child_path()).unwrap();
    // SAFETY: the child makes only async-signal-safe system calls (read, close_range, _exit).
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let mut b = [0u8; 16];
        loop {
            // SAFETY: `b` is a valid buffer of its length.
            let n = unsafe { libc::read(0, b.as_mut_ptr().cast(), b.len()) };
            if n == 0
                || (n < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR))
            {
                break;
            }
        }
        // SAFETY: closes every descriptor from 0 up; no memory is involved.
        unsafe { libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32) };
        // SAFETY: ends the child without running the parent's destructors.
        unsafe { libc::_exit(0) };
    }
    assert!(pid > 0);
    say("made");
    hold_until_released();
    drop(fifo);
}

#[test]
fn a_forked_child_that_holds_the_inherited_owner_keeps_it_alive() {
    if role().as_deref() == Some("forker") {
        return forking_owner_role();
    }
    let _wd = Watchdog::new("forked_alive", Duration::from_secs(60));
    let dir = crate::place();
    let path = dir.join("forked").unwrap();
    let mut p = spawn_owner(
        &test_path!(a_forked_child_that_holds_the_inherited_owner_keeps_it_alive),
        "forker",
        &path,
    );
    let (stdin, mut stdout) = (p.inner().stdin.take(), p.inner().stdout.take().unwrap());
    p.kill().unwrap();
    assert!(!p.wait_timeout(CHILD_LIMIT).unwrap().success());
    // The creator is dead; its forked child still holds the owner's descriptors.
    assert!(matches!(
        ipc_fifo::remove_stale(&path),
        Err(Error::OwnerAlive { .. })
    ));
    // Release the grandchild (it shares the creator's stdin) and wait for its stdout to close:
    // it closes every descriptor before it exits.
    drop(stdin);
    let mut rest = Vec::new();
    stdout.read_to_end(&mut rest).unwrap();
    ipc_fifo::remove_stale(&path).unwrap();
    assert!(!path.exists());
}

#[test]
fn owner_and_opener_in_one_process() {
    let dir = crate::place();
    let path = dir.join("f").unwrap();
    // Bits outside 0o777: refused before anything is made.
    for bad in [0o1000, 0o4755, 0o2700, 0o10600] {
        assert!(
            matches!(
                Fifo::options().mode(bad).create(&path),
                Err(Error::InvalidMode { mode }) if mode == bad
            ),
            "{bad:o}"
        );
        assert!(!path.exists());
    }

    let (owner, how) = Fifo::open_or_create(&path).unwrap();
    assert_eq!(how, Opened::Created);
    assert!(owner.is_owner());
    assert!(owner_lock_held(&path));
    let opener = Fifo::open(&path).unwrap();
    assert!(!opener.is_owner());
    assert!(matches!(opener.remove(), Err(Error::NotOwner { .. })));
    assert!(path.exists());
    // remove_stale from the owner's own process sees it alive too (its own descriptor).
    assert!(matches!(
        ipc_fifo::remove_stale(&path),
        Err(Error::OwnerAlive { .. })
    ));
    owner.remove().unwrap();
    assert!(!path.exists());

    // persist: still the owner (lock held) until dropped, then the FIFO stays, ownerless.
    let mut owner = Fifo::create(&path).unwrap();
    owner.persist();
    assert!(owner.is_owner());
    assert!(owner_lock_held(&path));
    drop(owner);
    assert!(!owner_lock_held(&path));
    assert!(path.exists());
    // ... and a stale one is what replace_stale takes over.
    let owner = Fifo::options().replace_stale().create(&path).unwrap();
    assert!(owner.is_owner());
    drop(owner);
    assert!(!path.exists());

    // OnDrop::Keep: the owner, alive while it lives; the FIFO stays after drop.
    let keeper = Fifo::options().on_drop(OnDrop::Keep).create(&path).unwrap();
    assert!(keeper.is_owner());
    assert!(owner_lock_held(&path));
    drop(keeper);
    assert!(path.exists());
    assert!(!owner_lock_held(&path));
    let (again, how) = Fifo::options()
        .replace_stale()
        .open_or_create(&path)
        .unwrap();
    assert_eq!(
        how,
        Opened::Created,
        "replace_stale took over the ownerless FIFO"
    );
    drop(again);
    assert!(!path.exists());

    // Whatever a refused create found is left alone, and no temporary name is left.
    std::fs::write(&path, b"data").unwrap();
    for opts in [Fifo::options(), Fifo::options().replace_stale()] {
        assert!(matches!(
            opts.create(&path),
            Err(Error::AlreadyExists { .. } | Error::NotAFifo { .. })
        ));
    }
    assert_eq!(std::fs::read(&path).unwrap(), b"data");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, [std::ffi::OsString::from("f")]);
}

#[test]
fn replace_stale_respects_the_owner_check() {
    if role().as_deref() == Some("nobody") {
        // Unprivileged: another user's stale FIFO is refused unless asked.
        rustix::thread::set_thread_uid(rustix::process::Uid::from_raw(65534)).unwrap();
        let path = child_path();
        let e = Fifo::options().replace_stale().create(&path).unwrap_err();
        assert!(matches!(e, Error::WrongOwner { found: 0, .. }), "{e:?}");
        assert!(
            e.to_string().contains("owner_check(OwnerCheck::AnyUid)"),
            "{e}"
        );
        assert!(matches!(
            ipc_fifo::remove_stale(&path),
            Err(Error::WrongOwner { .. })
        ));
        let f = Fifo::options()
            .owner_check(OwnerCheck::AnyUid)
            .replace_stale()
            .create(&path)
            .unwrap();
        assert!(f.is_owner());
        return;
    }
    let _wd = Watchdog::new("replace_stale_owner", Duration::from_secs(60));
    let dir = crate::place();
    // A directory that uid 65534 may write to, with root's stale FIFO in it.
    let shared = dir.join("shared").unwrap();
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    )
    .unwrap();
    rustix::fs::chown(&shared, Some(rustix::process::Uid::from_raw(65534)), None).unwrap();
    let path = shared.join("srv");
    let mut stale = Fifo::create(&path).unwrap();
    stale.persist();
    drop(stale); // kept, and now ownerless: stale
    Proc::spawn(
        child(
            &test_path!(replace_stale_respects_the_owner_check),
            "nobody",
        )
        .env(PATH_ENV, &path),
    )
    .unwrap()
    .expect_success(CHILD_LIMIT);
    assert!(
        !path.exists(),
        "the taker-over's owner removed its FIFO on exit"
    );
}

const REQUESTS_ENV: &str = "IPC_FIFO_TEST_REQUESTS";
const HOLD_ENV: &str = "IPC_FIFO_TEST_HOLD";

/// Child role: the server. Takes over its well-known directory and FIFO (whatever a crashed
/// run left), reads `REQUESTS_ENV` records with a keep-alive reader, and checks them.
fn server_role() {
    let place = child_path();
    let (dir, _) = PrivateDir::open_or_create(&place).unwrap();
    let fifo = Fifo::options()
        .replace_stale()
        .create(dir.join("requests").unwrap())
        .unwrap();
    let reader = FifoReader::options()
        .keep_alive(KeepAlive::On)
        .open(fifo.path())
        .unwrap();
    let mut requests = RecordReader::new(reader);
    say("serving");
    let want: usize = ipc_testkit::env_parse(REQUESTS_ENV).unwrap();
    let mut got = std::collections::BTreeSet::new();
    for _ in 0..want {
        let r = requests.recv_timeout(CHILD_LIMIT).unwrap().unwrap();
        let text = String::from_utf8(r.to_vec()).unwrap();
        assert!(text.starts_with("client "), "{text:?}");
        assert!(got.insert(text), "a request twice");
    }
    if std::env::var_os(HOLD_ENV).is_some() {
        // The run that is about to crash: says it got its requests, then waits to be killed.
        say("received");
        hold_until_released();
    }
}

/// Child role: a client; it may start before the server, even before its directory exists.
fn client_role() {
    let place = child_path();
    let id = std::env::var("IPC_FIFO_TEST_CLIENT").unwrap();
    let w = FifoWriter::open_timeout(place.join("requests"), CHILD_LIMIT).unwrap();
    w.write_record(format!("client {id}").as_bytes()).unwrap();
}

fn spawn_client(test: &str, place: &Path, id: usize) -> Proc {
    Proc::spawn(
        child(test, "client")
            .env(PATH_ENV, place)
            .env("IPC_FIFO_TEST_CLIENT", id.to_string()),
    )
    .unwrap()
}

#[test]
fn a_server_killed_and_restarted_takes_over_its_fifo_and_serves_clients_in_any_order() {
    match role().as_deref() {
        Some("server") => return server_role(),
        Some("client") => return client_role(),
        _ => {}
    }
    let _wd = Watchdog::new("restart", Duration::from_secs(120));
    let parent = crate::place();
    let place: PathBuf = parent.join("srv").unwrap();
    let me = test_path!(
        a_server_killed_and_restarted_takes_over_its_fifo_and_serves_clients_in_any_order
    );

    // A client that starts before anything exists, not even the directory.
    let early = spawn_client(&me, &place, 0);

    // The first server run: it serves the early client, then is killed.
    let mut first = spawn_piped(
        child(&me, "server")
            .env(PATH_ENV, &place)
            .env(REQUESTS_ENV, "1")
            .env(HOLD_ENV, "1")
            .stdin(std::process::Stdio::piped()),
    );
    expect_line(&mut first, "received");
    early.expect_success(CHILD_LIMIT);
    first.kill().unwrap();
    assert!(!first.wait_timeout(CHILD_LIMIT).unwrap().success());
    // Its FIFO and directory are left, ownerless.
    assert!(place.join("requests").exists());

    // Clients that start while no server runs: they wait for a reader.
    let waiting: Vec<Proc> = (1..3).map(|i| spawn_client(&me, &place, i)).collect();
    // The restarted server takes over the stale FIFO and directory.
    let mut second = spawn_piped(
        child(&me, "server")
            .env(PATH_ENV, &place)
            .env(REQUESTS_ENV, "4"),
    );
    expect_line(&mut second, "serving");
    // Clients after the server.
    let after: Vec<Proc> = (3..5).map(|i| spawn_client(&me, &place, i)).collect();
    for c in waiting.into_iter().chain(after) {
        c.expect_success(CHILD_LIMIT);
    }
    assert!(second.wait_timeout(CHILD_LIMIT).unwrap().success());
    assert!(
        !place.join("requests").exists(),
        "the server removed its FIFO"
    );
    assert!(place.exists(), "the shared directory stays");
}

#[test]
fn racing_open_or_create_makes_exactly_one_owner() {
    let _wd = Watchdog::new("racing_open_or_create", Duration::from_secs(60));
    let dir = crate::place();
    for round in 0..20 {
        let path = dir.join(format!("race-{round}")).unwrap();
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
        let racers: Vec<_> = (0..8)
            .map(|_| {
                let (path, barrier) = (path.clone(), std::sync::Arc::clone(&barrier));
                std::thread::spawn(move || {
                    barrier.wait();
                    let (f, how) = Fifo::open_or_create(&path).unwrap();
                    assert_eq!(f.is_owner(), how == Opened::Created);
                    (f, how)
                })
            })
            .collect();
        let results: Vec<(Fifo, Opened)> = racers.into_iter().map(|t| t.join().unwrap()).collect();
        let created = results
            .iter()
            .filter(|(_, how)| *how == Opened::Created)
            .count();
        assert_eq!(created, 1, "round {round}");
        drop(results);
        assert!(!path.exists(), "the one owner removed it");
    }
    // Nothing else (no temporary name) is left.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
