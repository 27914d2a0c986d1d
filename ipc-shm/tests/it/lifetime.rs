//! The lifetime model across real processes: liveness by the owner's OFD lock (alive, killed,
//! zombie, kept), identity (a name re-created by someone else is left alone), `remove`,
//! `replace_stale`, `open_or_create`, modes. POSIX segments and System V segments alike.

use std::time::Duration;

use ipc_shm::{Error, Key, OnDrop, Opened, Shm, Size, SysvShm};
use ipc_testkit::{Proc, Watchdog, child, posix_name, role, test_path};

use crate::{dev_shm, is_zombie, ready_then_wait_for_eof, spawn_ready, wait_exited_unreaped};

/// The kind of object a holder child makes.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Posix,
    Sysv,
}

/// A fresh System V key of the workspace's range that is free now.
fn free_key() -> i32 {
    loop {
        let key = ipc_testkit::sysv_key();
        if matches!(
            SysvShm::open(key, Size::AtMost(u64::MAX)),
            Err(Error::NotFound { .. })
        ) {
            return key;
        }
    }
}

/// The child role: creates the object named in the environment as its owner, says READY, and
/// ends as `HOW` says: `drop` (waits for stdin EOF, then drops: removes), `exit` (waits for
/// stdin EOF, then exits without dropping), `exit-now` (exits at once without dropping: a
/// zombie until reaped), `keep` (created with OnDrop::Keep, dropped, exits).
fn holder() {
    let how = std::env::var("HOW").unwrap();
    let on_drop = if how == "keep" {
        OnDrop::Keep
    } else {
        OnDrop::Remove
    };
    let obj: Box<dyn std::any::Any> = match std::env::var("KIND").unwrap().as_str() {
        "posix" => Box::new(
            Shm::options()
                .size(4096)
                .on_drop(on_drop)
                .create(&std::env::var("NAME").unwrap())
                .unwrap(),
        ),
        _ => {
            let key: i32 = std::env::var("KEY").unwrap().parse().unwrap();
            Box::new(
                SysvShm::options()
                    .size(4096)
                    .on_drop(on_drop)
                    .create(key)
                    .unwrap(),
            )
        }
    };
    match how.as_str() {
        "exit-now" => {
            println!("READY");
            std::process::exit(0)
        }
        "keep" => {
            drop(obj);
            println!("READY");
        }
        "exit" => {
            ready_then_wait_for_eof();
            std::process::exit(0)
        }
        _ => {
            ready_then_wait_for_eof();
            drop(obj);
        }
    }
}

fn spawn_holder(test: &str, kind: Kind, how: &str, name: &str, key: i32) -> Proc {
    let mut c = child(test, "holder");
    c.env("HOW", how)
        .env(
            "KIND",
            match kind {
                Kind::Posix => "posix",
                Kind::Sysv => "sysv",
            },
        )
        .env("NAME", name)
        .env("KEY", key.to_string());
    let (p, _lines) = spawn_ready(&mut c);
    p
}

fn remove_stale(kind: Kind, name: &str, key: i32) -> ipc_shm::Result<()> {
    match kind {
        Kind::Posix => ipc_shm::remove_stale(name),
        Kind::Sysv => ipc_shm::sysv::remove_stale(key.into()),
    }
}

fn exists(kind: Kind, name: &str, key: i32) -> bool {
    match kind {
        Kind::Posix => dev_shm(name).exists(),
        Kind::Sysv => SysvShm::open(key, Size::AtMost(u64::MAX)).is_ok(),
    }
}

/// Alive: refused. SIGKILLed: removed. A zombie: removed. Kept and exited: removed.
fn liveness(kind: Kind, test: &str) {
    let _wd = Watchdog::new("liveness", Duration::from_secs(120));
    for how in ["alive", "killed", "zombie", "keep"] {
        let name = posix_name("live");
        let key = free_key();
        let child_how = match how {
            "alive" => "drop",
            "killed" => "exit",
            "zombie" => "exit-now",
            _ => "keep",
        };
        let mut p = spawn_holder(test, kind, child_how, &name, key);
        assert!(exists(kind, &name, key), "{kind:?} {how}: created");
        match how {
            "alive" => {
                let r = remove_stale(kind, &name, key);
                assert!(
                    matches!(r, Err(Error::OwnerAlive { .. })),
                    "{kind:?}: {r:?}"
                );
                assert!(exists(kind, &name, key), "a live owner's object stays");
                drop(p.inner().stdin.take()); // the owner drops it and exits
                assert!(p.wait_timeout(Duration::from_secs(30)).unwrap().success());
                assert!(!exists(kind, &name, key), "the owner removed it on drop");
                continue;
            }
            "killed" => {
                p.kill().unwrap();
                p.wait_timeout(Duration::from_secs(30)).unwrap();
            }
            "zombie" => {
                wait_exited_unreaped(p.id(), Duration::from_secs(30));
                assert!(is_zombie(p.id()), "the owner is a zombie, not reaped yet");
            }
            _ => {
                assert!(p.wait_timeout(Duration::from_secs(30)).unwrap().success());
            }
        }
        assert!(exists(kind, &name, key), "{kind:?} {how}: left behind");
        let companion = match kind {
            Kind::Posix => None,
            Kind::Sysv => {
                let seg = SysvShm::open(key, 4096).unwrap();
                Some(format!("/dev/shm/ipc-sysv-shm-{}.owner", seg.id()))
            }
        };
        if let Some(c) = &companion {
            assert!(
                std::path::Path::new(c).exists(),
                "{how}: the companion is left too"
            );
        }
        remove_stale(kind, &name, key).unwrap_or_else(|e| panic!("{kind:?} {how}: {e}"));
        assert!(!exists(kind, &name, key), "{kind:?} {how}: removed");
        if let Some(c) = &companion {
            assert!(
                !std::path::Path::new(c).exists(),
                "{how}: companion removed with it"
            );
        }
        drop(p);
    }
}

#[test]
fn posix_remove_stale_refuses_a_live_owner_and_removes_a_dead_ones_segment() {
    if role().as_deref() == Some("holder") {
        return holder();
    }
    liveness(
        Kind::Posix,
        &test_path!(posix_remove_stale_refuses_a_live_owner_and_removes_a_dead_ones_segment),
    );
}

#[test]
fn sysv_remove_stale_refuses_a_live_owner_and_removes_a_dead_ones_segment() {
    if role().as_deref() == Some("holder") {
        return holder();
    }
    liveness(
        Kind::Sysv,
        &test_path!(sysv_remove_stale_refuses_a_live_owner_and_removes_a_dead_ones_segment),
    );
}

/// The System V owner's companion file exists while it lives, with mode 0600 and the owner's
/// lock, and goes with the segment.
#[test]
fn sysv_companion_file_lives_and_dies_with_the_segment() {
    use std::os::unix::fs::PermissionsExt;
    let seg = SysvShm::create(Key::PRIVATE, 4096).unwrap();
    let path = format!("/dev/shm/ipc-sysv-shm-{}.owner", seg.id());
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert!(meta.is_file());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let id = seg.id();
    drop(seg);
    assert!(!std::path::Path::new(&path).exists(), "companion removed");
    assert!(matches!(
        SysvShm::attach(id, Size::AtMost(1 << 20)),
        Err(Error::NotFound { .. })
    ));
    // remove(self) reports, and removes the companion too.
    let seg = SysvShm::create(Key::PRIVATE, 4096).unwrap();
    let path = format!("/dev/shm/ipc-sysv-shm-{}.owner", seg.id());
    seg.remove().unwrap();
    assert!(!std::path::Path::new(&path).exists());
}

/// The role: removes the name the parent owns, re-creates it as its own owner with a marker,
/// says READY, waits for EOF on stdin, then drops its owner.
fn recreator() {
    match std::env::var("KIND").unwrap().as_str() {
        "posix" => {
            let name = std::env::var("NAME").unwrap();
            ipc_shm::unlink(&name).unwrap();
            let mine = Shm::create(&name, 8192).unwrap();
            mine.write::<u64>(0, &0xc0de).unwrap();
            ready_then_wait_for_eof();
            drop(mine);
        }
        _ => {
            let key: i32 = std::env::var("KEY").unwrap().parse().unwrap();
            let id: i32 = std::env::var("ID").unwrap().parse().unwrap();
            ipc_shm::sysv::remove(id).unwrap();
            let mine = SysvShm::create(key, 8192).unwrap();
            mine.write::<u64>(0, &0xc0de).unwrap();
            ready_then_wait_for_eof();
            drop(mine);
        }
    }
}

/// Identity: the owner's name is removed and re-created by another process; dropping the first
/// owner leaves the newcomer's object alone (and `remove` says the name is no longer ours).
#[test]
fn an_owner_leaves_an_object_recreated_under_its_name_alone() {
    if role().as_deref() == Some("recreator") {
        return recreator();
    }
    let _wd = Watchdog::new("recreate", Duration::from_secs(60));
    let test = test_path!(an_owner_leaves_an_object_recreated_under_its_name_alone);
    for remove_explicitly in [false, true] {
        // POSIX.
        let name = posix_name("recr");
        let first = Shm::create(&name, 4096).unwrap();
        let mut c = child(&test, "recreator");
        c.env("KIND", "posix").env("NAME", &name);
        let (mut p, _) = spawn_ready(&mut c);
        if remove_explicitly {
            assert!(matches!(first.remove(), Err(Error::NotFound { .. })));
        } else {
            drop(first);
        }
        let theirs = Shm::open(&name, 8192).expect("the newcomer's segment is still there");
        assert_eq!(theirs.read::<u64>(0).unwrap(), 0xc0de);
        assert!(matches!(
            ipc_shm::remove_stale(&name),
            Err(Error::OwnerAlive { .. })
        ));
        drop(p.inner().stdin.take());
        assert!(p.wait_timeout(Duration::from_secs(30)).unwrap().success());
        assert!(!dev_shm(&name).exists(), "the newcomer removed its own");

        // System V: the first owner removes by id, so the newcomer under the same key stays.
        let key = free_key();
        let first = SysvShm::create(key, 4096).unwrap();
        let mut c = child(&test, "recreator");
        c.env("KIND", "sysv")
            .env("KEY", key.to_string())
            .env("ID", first.id().to_string());
        let (mut p, _) = spawn_ready(&mut c);
        if remove_explicitly {
            assert!(matches!(first.remove(), Err(Error::NotFound { .. })));
        } else {
            drop(first);
        }
        let theirs = SysvShm::open(key, 8192).expect("the newcomer's segment is still there");
        assert_eq!(theirs.read::<u64>(0).unwrap(), 0xc0de);
        let companion = format!("/dev/shm/ipc-sysv-shm-{}.owner", theirs.id());
        assert!(
            std::path::Path::new(&companion).exists(),
            "its companion too"
        );
        assert!(matches!(
            ipc_shm::sysv::remove_stale(key.into()),
            Err(Error::OwnerAlive { .. })
        ));
        drop(theirs);
        drop(p.inner().stdin.take());
        assert!(p.wait_timeout(Duration::from_secs(30)).unwrap().success());
        assert!(!std::path::Path::new(&companion).exists());
    }
}

#[test]
fn remove_persist_and_replace_stale() {
    let name = posix_name("rm");
    let owner = Shm::create(&name, 4096).unwrap();
    let opener = Shm::open(&name, 4096).unwrap();
    assert!(matches!(opener.remove(), Err(Error::NotOwner { .. })));
    assert!(dev_shm(&name).exists(), "an opener removes nothing");
    owner.remove().unwrap();
    assert!(!dev_shm(&name).exists());

    // A server restarted after a crash: the stale segment is replaced...
    let mut kept = Shm::create(&name, 4096).unwrap();
    kept.write::<u64>(0, &1).unwrap();
    kept.persist();
    assert!(kept.is_owner(), "the owner until dropped");
    // ...but not while its (persisted) owner lives.
    let r = Shm::options().size(4096).replace_stale().create(&name);
    assert!(matches!(r, Err(Error::OwnerAlive { .. })), "{r:?}");
    drop(kept);
    assert!(dev_shm(&name).exists(), "kept");
    let fresh = Shm::options()
        .size(8192)
        .replace_stale()
        .create(&name)
        .unwrap();
    assert!(fresh.is_owner());
    assert_eq!(fresh.len(), 8192);
    assert_eq!(
        fresh.read::<u64>(0).unwrap(),
        0,
        "a new segment, not the stale one"
    );
    // open_or_create with replace_stale opens a live owner's segment.
    let (again, how) = Shm::options()
        .size(8192)
        .replace_stale()
        .open_or_create(&name)
        .unwrap();
    assert_eq!(how, Opened::Existing);
    drop((again, fresh));
    assert!(!dev_shm(&name).exists());

    // System V: the same words.
    let key = free_key();
    let mut kept = SysvShm::create(key, 4096).unwrap();
    kept.persist();
    drop(kept);
    assert!(SysvShm::open(key, 4096).is_ok(), "kept after drop");
    let fresh = SysvShm::options()
        .size(4096)
        .replace_stale()
        .create(key)
        .unwrap();
    assert!(fresh.is_owner());
    let r = SysvShm::options().size(4096).replace_stale().create(key);
    assert!(matches!(r, Err(Error::OwnerAlive { .. })), "{r:?}");
    let (opened, how) = SysvShm::open_or_create(key, 4096).unwrap();
    assert_eq!(how, Opened::Existing);
    assert!(!opened.is_owner());
    assert!(matches!(opened.remove(), Err(Error::NotOwner { .. })));
    drop(fresh);
    assert!(matches!(
        SysvShm::open(key, 4096),
        Err(Error::NotFound { .. })
    ));
}

/// Mode bits outside 0o777 are refused before any system call, for both kinds.
#[test]
fn modes_outside_0o777_are_refused_before_anything_is_made() {
    let name = posix_name("mode");
    for mode in [0o1600, 0o4755, 0o10000, u32::MAX] {
        let r = Shm::options().size(4096).mode(mode).create(&name);
        assert!(
            matches!(r, Err(Error::InvalidMode { mode: m }) if m == mode),
            "{r:?}"
        );
        assert!(!dev_shm(&name).exists());
        let key = free_key();
        let r = SysvShm::options().size(4096).mode(mode).create(key);
        assert!(matches!(r, Err(Error::InvalidMode { .. })), "{r:?}");
        assert!(matches!(
            SysvShm::open(key, 4096),
            Err(Error::NotFound { .. })
        ));
    }
    let s = Shm::options().size(4096).mode(0o640).create(&name).unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dev_shm(&name))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o640);
    drop(s);
}

/// open_or_create ends, whatever others do to the name meanwhile: a thread creates and removes
/// the name as fast as it can while open_or_create runs; every call returns a handle or a
/// typed error (Contended included), never loops forever.
#[test]
fn open_or_create_is_bounded_while_the_name_flickers() {
    let _wd = Watchdog::new("flicker", Duration::from_secs(60));
    let name = posix_name("flick");
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = std::fs::File::create_new(dev_shm(&name));
                let _ = std::fs::remove_file(dev_shm(&name));
            }
        });
        for _ in 0..2000 {
            match Shm::open_or_create(&name, 4096) {
                Ok((seg, _)) => drop(seg),
                Err(
                    Error::Contended { .. }
                    | Error::NotReady { .. }
                    | Error::SizeMismatch { .. }
                    | Error::NotFound { .. },
                ) => {}
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let _ = std::fs::remove_file(dev_shm(&name));
    // A name that create always finds taken and open always refuses: a typed error at once.
    let link = posix_name("dangling");
    std::os::unix::fs::symlink("/nonexistent-ipcrs-target", dev_shm(&link)).unwrap();
    let _rm = crate::RmOnDrop(dev_shm(&link));
    let r = Shm::open_or_create(&link, 4096);
    assert!(matches!(r, Err(Error::Symlink { .. })), "{r:?}");
}
