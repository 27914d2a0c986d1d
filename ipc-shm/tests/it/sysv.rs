//! System V segments across processes.

use std::time::Duration;

use ipc_shm::sysv::Key;
use ipc_shm::{Access, Error, Size, SysvShm};
use ipc_testkit::{Proc, Watchdog, child, role, sysv_key, test_path};

/// A segment under a fresh workspace key; a plain `i32` key works where a [`Key`] is expected.
fn create_fresh(size: u64) -> (i32, SysvShm) {
    loop {
        let key: i32 = sysv_key();
        match SysvShm::create(key, size) {
            Err(Error::AlreadyExists { .. }) => continue,
            r => return (key, r.unwrap()),
        }
    }
}

#[test]
fn a_child_attaches_by_key_and_the_owner_removes_it() {
    if role().as_deref() == Some("peer") {
        let key: i32 = std::env::var("KEY").unwrap().parse().unwrap();
        assert!(matches!(
            SysvShm::open(key, 4096),
            Err(Error::SizeMismatch { .. })
        ));
        let seg = SysvShm::open(key, 8192).unwrap();
        assert_eq!(seg.read::<u64>(0).unwrap(), 0x5151);
        seg.write::<u64>(8, &0x7272).unwrap();
        return;
    }
    let _wd = Watchdog::new("sysv", Duration::from_secs(20));
    let (key, seg) = create_fresh(8192);
    assert!(seg.is_owner());
    assert!(
        seg.read_vec::<u64>(0, 1024)
            .unwrap()
            .iter()
            .all(|&w| w == 0)
    );
    seg.write::<u64>(0, &0x5151).unwrap();
    let mut c = child(
        &test_path!(a_child_attaches_by_key_and_the_owner_removes_it),
        "peer",
    );
    c.env("KEY", key.to_string());
    Proc::spawn(&mut c)
        .unwrap()
        .expect_success(Duration::from_secs(15));
    assert_eq!(seg.read::<u64>(8).unwrap(), 0x7272);
    let id = seg.id();
    let ro = SysvShm::options()
        .max_size(1 << 20)
        .access(Access::ReadOnly)
        .attach(id)
        .unwrap();
    assert!(matches!(ro.write::<u8>(0, &1), Err(Error::ReadOnly)));
    drop(ro);
    drop(seg);
    assert!(matches!(
        SysvShm::attach(id, Size::AtMost(1 << 20)),
        Err(Error::NotFound { .. })
    ));
}

#[test]
fn private_segments_and_bad_sizes() {
    assert!(matches!(
        SysvShm::create(Key::PRIVATE, 0),
        Err(Error::InvalidSize { size: 0, .. })
    ));
    assert!(matches!(
        SysvShm::create(Key::PRIVATE, u64::MAX),
        Err(Error::InvalidSize { .. })
    ));
    let seg = SysvShm::create(Key::PRIVATE, 100).unwrap();
    assert_eq!(seg.len(), 100);
    assert!(seg.read_vec::<u8>(0, 100).unwrap().iter().all(|&b| b == 0));
    // A private segment has no key to find it by: open refuses before any syscall (a
    // `shmget(IPC_PRIVATE, ...)` would make a new segment instead).
    assert!(matches!(
        SysvShm::open(Key::PRIVATE, 100),
        Err(Error::NotFound { .. })
    ));
    let mut kept = seg;
    kept.persist();
    let id = kept.id();
    drop(kept);
    // Persisted: still there, attachable by id, until removed.
    let again = SysvShm::options()
        .max_size(1 << 20)
        .access(Access::ReadOnly)
        .attach(id)
        .unwrap();
    assert_eq!(again.len(), 100);
    drop(again);
    ipc_shm::sysv::remove(id).unwrap();
    assert!(matches!(
        ipc_shm::sysv::remove(id),
        Err(Error::NotFound { .. })
    ));
}

#[test]
fn keys_from_numbers_and_paths() {
    assert_eq!(Key::from(0x4950_0001), Key::new(0x4950_0001));
    assert_eq!(Key::new(-5).as_raw(), -5);
    assert_eq!(Key::PRIVATE.as_raw(), 0);
    let missing = std::env::temp_dir().join(ipc_testkit::unique("nofile"));
    assert!(matches!(
        Key::from_path(&missing, 1),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        Key::from_path(std::path::Path::new("/tmp/a\0b"), 1),
        Err(Error::InvalidName { .. })
    ));
    let here = std::env::temp_dir();
    let (a, b) = (
        Key::from_path(&here, 1).unwrap(),
        Key::from_path(&here, 2).unwrap(),
    );
    assert_ne!(a, b, "the project byte is part of the key");
    assert_eq!(a, Key::from_path(&here, 1).unwrap(), "same file, same key");
}

/// Two processes meet through `ftok` on a file both know: the child derives the same key.
#[test]
fn a_child_finds_a_segment_by_an_ftok_key() {
    if role().as_deref() == Some("ftok") {
        let path = std::env::var("KEY_PATH").unwrap();
        let key = Key::from_path(path.as_ref(), b'S').unwrap();
        let seg = SysvShm::open(key, 4096).unwrap();
        assert_eq!(seg.read::<u64>(0).unwrap(), 0xf70c);
        seg.write::<u64>(8, &0xc0ffee).unwrap();
        return;
    }
    let _wd = Watchdog::new("ftok", Duration::from_secs(20));
    let path = std::env::temp_dir().join(ipc_testkit::unique("ftok"));
    let _rm = crate::RmOnDrop(path.clone());
    std::fs::write(&path, b"").unwrap();
    let key = Key::from_path(&path, b'S').unwrap();
    let seg = SysvShm::create(key, 4096).unwrap(); // the owner removes it, even on failure
    seg.write::<u64>(0, &0xf70c).unwrap();
    let mut c = child(&test_path!(a_child_finds_a_segment_by_an_ftok_key), "ftok");
    c.env("KEY_PATH", &path);
    Proc::spawn(&mut c)
        .unwrap()
        .expect_success(Duration::from_secs(15));
    assert_eq!(seg.read::<u64>(8).unwrap(), 0xc0ffee);
    let id = seg.id();
    drop(seg);
    assert!(matches!(
        SysvShm::open(key, 4096),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        ipc_shm::sysv::remove(id),
        Err(Error::NotFound { .. })
    ));
}
