use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

use ipc_fifo::{
    Error, Fifo, FifoReader, FifoWriter, FileKind, KeepAlive, OWNER_LOCK, Opened, PrivateDir,
    RecordReader,
};
use ipc_testkit::{Proc, Watchdog, child, role, test_path};

use crate::{CHILD_LIMIT, PATH_ENV, child_path, expect_line, lock_held, say, spawn_piped};

fn mode(p: &std::path::Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn new_private_dir_is_0700_ours_owned_and_removed_with_its_contents_on_drop() {
    let dir = PrivateDir::new("ipcrs-fifo-dir").unwrap();
    let path = dir.path().to_owned();
    assert!(dir.is_owner());
    assert!(path.starts_with(PrivateDir::base()));
    assert!(
        path.file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("ipcrs-fifo-dir-")
    );
    assert_eq!(mode(&path), 0o700);
    assert_eq!(
        std::fs::metadata(&path).unwrap().uid(),
        rustix::process::geteuid().as_raw()
    );
    // The owner's liveness lock, as another program sees it.
    assert!(lock_held(&path, OWNER_LOCK));
    let mut fifo = Fifo::create(dir.join("f").unwrap()).unwrap();
    fifo.persist();
    std::fs::create_dir_all(path.join("a/b/c")).unwrap();
    std::fs::write(path.join("a/b/file"), b"x").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", path.join("a/link")).unwrap();
    drop(dir);
    assert!(
        !path.exists(),
        "a new private dir is removed with its contents"
    );
    assert!(std::path::Path::new("/etc/passwd").exists());
}

#[test]
fn new_private_dir_removes_only_its_own_directory() {
    let parent = crate::place();
    // Owner of a directory that someone renames away and replaces with another.
    let dir = PrivateDir::new("ipcrs-fifo-id").unwrap();
    let path = dir.path().to_owned();
    let moved = parent.join("moved").unwrap();
    std::fs::rename(&path, &moved).unwrap();
    std::fs::create_dir(&path).unwrap();
    std::fs::write(path.join("theirs"), b"keep").unwrap();
    drop(dir);
    assert_eq!(std::fs::read(path.join("theirs")).unwrap(), b"keep");
    assert!(moved.exists(), "it followed its directory to a new name");
    std::fs::remove_dir_all(&path).unwrap();

    // `remove` reports the same case; `persist` keeps; a non-owner removes nothing.
    let dir = PrivateDir::new("ipcrs-fifo-id").unwrap();
    let path = dir.path().to_owned();
    std::fs::rename(&path, parent.join("moved2").unwrap()).unwrap();
    std::fs::create_dir(&path).unwrap();
    assert!(matches!(dir.remove(), Err(Error::NotFound { .. })));
    assert!(path.exists());
    std::fs::remove_dir(&path).unwrap();

    let mut dir = PrivateDir::new("ipcrs-fifo-id").unwrap();
    let path = dir.path().to_owned();
    dir.persist();
    assert!(dir.is_owner(), "the owner until dropped");
    assert!(
        lock_held(&path, OWNER_LOCK),
        "persist keeps the lock until drop"
    );
    drop(dir);
    assert!(path.exists(), "persisted");
    assert!(!lock_held(&path, OWNER_LOCK), "dropped: the lock is gone");
    std::fs::remove_dir(&path).unwrap();

    let dir = PrivateDir::new("ipcrs-fifo-id").unwrap();
    let path = dir.path().to_owned();
    std::fs::write(path.join("f"), b"x").unwrap();
    dir.remove().unwrap();
    assert!(!path.exists());
}

#[test]
fn open_or_create_makes_or_checks_a_well_known_place_and_never_removes_it() {
    let parent = PrivateDir::new("ipcrs-fifo-wk").unwrap();
    let place = parent.join("app").unwrap();
    let (first, how) = PrivateDir::open_or_create(&place).unwrap();
    assert_eq!(how, Opened::Created);
    assert!(!first.is_owner());
    assert_eq!(mode(&place), 0o700);
    let (second, how) = PrivateDir::open_or_create(&place).unwrap();
    assert_eq!(how, Opened::Existing);
    let fifo = Fifo::create(second.join("server").unwrap()).unwrap();
    drop(first);
    drop(second);
    assert!(fifo.path().exists(), "a shared place is never removed");
    let opened = PrivateDir::open(&place).unwrap();
    assert!(matches!(opened.remove(), Err(Error::NotOwner { .. })));
    drop(fifo);
    assert!(place.exists());
    std::fs::remove_dir(&place).unwrap();

    // Missing: NotFound says whether the parent is there.
    match PrivateDir::open(&place) {
        Err(Error::NotFound { path, dir_exists }) => {
            assert_eq!(path, place);
            assert!(dir_exists);
        }
        other => panic!("{other:?}"),
    }
    let deep = parent.join("none").unwrap().join("app");
    assert!(matches!(
        PrivateDir::open_or_create(&deep),
        Err(Error::NotFound {
            dir_exists: false,
            ..
        })
    ));

    // Not private: mode 0755.
    std::fs::create_dir(&place).unwrap();
    std::fs::set_permissions(&place, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(matches!(
        PrivateDir::open_or_create(&place),
        Err(Error::NotPrivate { mode: 0o755, .. })
    ));
    // Another owner.
    std::fs::set_permissions(&place, std::fs::Permissions::from_mode(0o700)).unwrap();
    rustix::fs::chown(&place, Some(rustix::process::Uid::from_raw(65534)), None).unwrap();
    let e = PrivateDir::open_or_create(&place).unwrap_err();
    assert!(matches!(e, Error::NotPrivate { uid: 65534, .. }), "{e:?}");
    assert!(e.to_string().contains(&place.display().to_string()), "{e}");
    // A symlink to a private directory, and a file.
    let link = parent.join("link").unwrap();
    std::os::unix::fs::symlink(parent.path(), &link).unwrap();
    assert!(matches!(
        PrivateDir::open_or_create(&link),
        Err(Error::NotADirectory {
            found: FileKind::Symlink,
            ..
        })
    ));
    let file = parent.join("file").unwrap();
    std::fs::write(&file, b"x").unwrap();
    assert!(matches!(
        PrivateDir::open_or_create(&file),
        Err(Error::NotADirectory {
            found: FileKind::Regular,
            ..
        })
    ));
    assert_eq!(std::fs::read(&file).unwrap(), b"x");
    assert!(matches!(
        PrivateDir::new("a/b"),
        Err(Error::InvalidName { .. })
    ));
    assert!(matches!(
        PrivateDir::new(&"p".repeat(250)),
        Err(Error::InvalidName { .. })
    ));
}

/// Child role: a client that starts before its server. It makes the well-known directory
/// (so it is the one that "created" it), says so, sends one request once the server's FIFO
/// appears, and exits — dropping its handle to the directory.
fn early_client_role() {
    let place = child_path();
    let (dir, how) = PrivateDir::open_or_create(&place).unwrap();
    assert_eq!(how, Opened::Created);
    say("created");
    let w = FifoWriter::open_timeout(dir.join("server").unwrap(), CHILD_LIMIT).unwrap();
    w.write_record(b"early").unwrap();
}

/// Child role: a client that comes after the first one left.
fn late_client_role() {
    let place = child_path();
    let (dir, how) = PrivateDir::open_or_create(&place).unwrap();
    assert_eq!(how, Opened::Existing);
    let w = FifoWriter::open_timeout(dir.join("server").unwrap(), CHILD_LIMIT).unwrap();
    w.write_record(b"late").unwrap();
}

#[test]
fn a_client_that_created_the_shared_dir_does_not_remove_the_servers_fifo_when_it_exits() {
    match role().as_deref() {
        Some("early") => return early_client_role(),
        Some("late") => return late_client_role(),
        _ => {}
    }
    let _wd = Watchdog::new("shared_dir", Duration::from_secs(90));
    let parent = crate::place();
    let place = parent.join("app").unwrap();
    let me = test_path!(
        a_client_that_created_the_shared_dir_does_not_remove_the_servers_fifo_when_it_exits
    );
    let mut early = spawn_piped(child(&me, "early").env(PATH_ENV, &place));
    expect_line(&mut early, "created");
    // The server comes second: the directory exists, it makes its FIFO in it.
    let (dir, how) = PrivateDir::open_or_create(&place).unwrap();
    assert_eq!(how, Opened::Existing);
    let fifo = Fifo::create(dir.join("server").unwrap()).unwrap();
    let reader = FifoReader::options()
        .keep_alive(KeepAlive::On)
        .open(fifo.path())
        .unwrap();
    let mut requests = RecordReader::new(reader);
    assert_eq!(
        requests.recv_timeout(CHILD_LIMIT).unwrap(),
        Some(&b"early"[..])
    );
    early.expect_success(CHILD_LIMIT);
    // The early client (which made the directory) has exited: the FIFO is still there.
    assert!(
        fifo.path().exists(),
        "the first client removed the server's FIFO"
    );
    Proc::spawn(child(&me, "late").env(PATH_ENV, &place))
        .unwrap()
        .expect_success(CHILD_LIMIT);
    assert_eq!(
        requests.recv_timeout(CHILD_LIMIT).unwrap(),
        Some(&b"late"[..])
    );
}

/// Child role: makes a private directory, says where, and waits to be killed.
fn dir_owner_role() {
    let dir = PrivateDir::new("ipcrs-fifo-killed").unwrap();
    say(&format!("dir {}", dir.path().display()));
    // Bounded: the test kills us long before this.
    std::thread::sleep(CHILD_LIMIT);
    panic!("not killed");
}

#[test]
fn a_new_dirs_owner_lock_is_held_while_it_lives_and_gone_when_it_is_killed() {
    if role().as_deref() == Some("dir-owner") {
        return dir_owner_role();
    }
    let _wd = Watchdog::new("dir_owner_lock", Duration::from_secs(60));
    let me = test_path!(a_new_dirs_owner_lock_is_held_while_it_lives_and_gone_when_it_is_killed);
    let mut p = spawn_piped(&mut child(&me, "dir-owner"));
    let out = p.inner().stdout.as_mut().unwrap();
    let mut line = String::new();
    let mut lines = std::io::BufReader::new(out);
    let path = loop {
        line.clear();
        assert!(std::io::BufRead::read_line(&mut lines, &mut line).unwrap() > 0);
        if let Some(p) = line.trim_end().strip_prefix("dir ") {
            break std::path::PathBuf::from(p);
        }
    };
    assert!(lock_held(&path, OWNER_LOCK));
    p.kill().unwrap();
    let status = p.wait_timeout(CHILD_LIMIT).unwrap();
    assert!(!status.success());
    assert!(path.exists(), "a killed owner leaves its directory");
    assert!(!lock_held(&path, OWNER_LOCK), "and no lock");
    std::fs::remove_dir_all(&path).unwrap();
}

#[test]
fn racing_open_or_create_of_a_place_makes_it_once_and_nobody_removes_it() {
    let parent = crate::place();
    for round in 0..20 {
        let place = parent.join(format!("app-{round}")).unwrap();
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
        let racers: Vec<_> = (0..8)
            .map(|_| {
                let (place, barrier) = (place.clone(), std::sync::Arc::clone(&barrier));
                std::thread::spawn(move || {
                    barrier.wait();
                    PrivateDir::open_or_create(&place).unwrap().1
                })
            })
            .collect();
        let created = racers
            .into_iter()
            .map(|t| t.join().unwrap())
            .filter(|how| *how == Opened::Created)
            .count();
        assert_eq!(created, 1, "round {round}");
        assert!(place.is_dir());
        assert_eq!(mode(&place), 0o700);
    }
}
