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

/// Runs the current test as `role` in its own IPC and mount namespaces with a private tmpfs on
/// /dev/shm, so System V ids are predictable (`shm_next_id`) and planted files hurt no one.
fn in_private_namespaces(test: &str, role: &str) {
    if std::process::Command::new("unshare")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: no unshare(1)");
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let mut c = std::process::Command::new("unshare");
    c.args(["--ipc", "--mount", "--propagation", "private", "sh", "-c"])
        .arg("mount -t tmpfs -o size=1m tmpfs /dev/shm && exec \"$0\" \"$@\"")
        .arg(exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1", "-q"])
        .env(ipc_testkit::ROLE_ENV, role)
        .stdout(std::process::Stdio::piped());
    let mut p = Proc::spawn(&mut c).unwrap();
    let out = p.inner().stdout.take().unwrap();
    let status = p.wait_timeout(Duration::from_secs(30)).unwrap();
    let text = std::io::read_to_string(out).unwrap();
    assert!(status.success(), "{status:?}: {text}");
    assert!(text.contains("NS-OK"), "{text}");
}

fn next_id(id: i32) {
    std::fs::write("/proc/sys/kernel/shm_next_id", id.to_string()).unwrap();
}

fn inode(path: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path).unwrap().ino()
}

fn companion_role() {
    use std::os::unix::fs::PermissionsExt;
    const KEY: i32 = 0x4950_0001;
    let path = |id: i32| format!("/dev/shm/ipc-sysv-shm-{id}.owner");

    // A stale companion of ours (its owner died): reused, locked again, removed with the new
    // segment.
    std::fs::write(path(100), b"").unwrap();
    std::fs::set_permissions(path(100), std::fs::Permissions::from_mode(0o644)).unwrap();
    let planted = inode(&path(100));
    next_id(100);
    let seg = SysvShm::create(KEY, 4096).unwrap();
    assert_eq!(seg.id(), 100);
    assert_eq!(inode(&path(100)), planted, "the stale companion is reused");
    let mode = std::fs::metadata(path(100)).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "and made 0600");
    assert!(matches!(
        ipc_shm::sysv::remove_stale(KEY.into()),
        Err(Error::OwnerAlive { .. })
    ));
    drop(seg);
    assert!(!std::path::Path::new(&path(100)).exists());

    // A companion whose lock someone holds: replaced by a new file (the old one is unlinked).
    std::fs::write(path(101), b"").unwrap();
    let held = std::fs::File::open(path(101)).unwrap();
    let fl = libc::flock {
        l_type: libc::F_RDLCK as i16,
        l_whence: libc::SEEK_SET as i16,
        l_start: ipc_shm::OWNER_LOCK as i64,
        l_len: 1,
        l_pid: 0,
    };
    nix::fcntl::fcntl(&held, nix::fcntl::FcntlArg::F_OFD_SETLK(&fl)).unwrap();
    let planted = inode(&path(101));
    next_id(101);
    let seg = SysvShm::create(KEY, 4096).unwrap();
    assert_eq!(seg.id(), 101);
    assert_ne!(inode(&path(101)), planted, "a locked companion is replaced");
    drop(seg);
    drop(held);

    // A symlink planted there: replaced; its target is untouched.
    std::fs::write("/dev/shm/target", b"precious").unwrap();
    std::os::unix::fs::symlink("/dev/shm/target", path(102)).unwrap();
    next_id(102);
    let seg = SysvShm::create(KEY, 4096).unwrap();
    assert_eq!(seg.id(), 102);
    assert!(std::fs::symlink_metadata(path(102)).unwrap().is_file());
    drop(seg);
    assert_eq!(std::fs::read("/dev/shm/target").unwrap(), b"precious");

    // Another user's file there: not reused (root replaces it).
    std::fs::write(path(103), b"").unwrap();
    std::os::unix::fs::chown(path(103), Some(65534), Some(65534)).unwrap();
    next_id(103);
    let seg = SysvShm::create(KEY, 4096).unwrap();
    assert_eq!(std::fs::metadata(path(103)).unwrap().uid_of(), 0);
    drop(seg);

    // A directory there cannot be replaced: create fails and leaves nothing behind.
    std::fs::create_dir(path(104)).unwrap();
    next_id(104);
    let r = SysvShm::create(KEY, 4096);
    assert!(r.is_err(), "{r:?}");
    assert!(matches!(
        SysvShm::open(KEY, 4096),
        Err(Error::NotFound { .. })
    ));
    let table = std::fs::read_to_string("/proc/sysvipc/shm").unwrap();
    assert_eq!(table.lines().count(), 1, "no segment left: {table}");
    std::fs::remove_dir(path(104)).unwrap();
    println!("NS-OK");
}

trait UidOf {
    fn uid_of(&self) -> u32;
}
impl UidOf for std::fs::Metadata {
    fn uid_of(&self) -> u32 {
        std::os::unix::fs::MetadataExt::uid(self)
    }
}

/// The companion file spec: one left by a dead owner of an earlier segment with the same id is
/// reused only if it is a regular file of ours whose lock is free, else replaced; a failure
/// fails `create` cleanly.
#[test]
fn a_leftover_companion_is_reused_only_when_it_is_ours_and_free() {
    if role().as_deref() == Some("companion") {
        return companion_role();
    }
    let _wd = Watchdog::new("companion", Duration::from_secs(40));
    in_private_namespaces(
        &test_path!(a_leftover_companion_is_reused_only_when_it_is_ours_and_free),
        "companion",
    );
}
