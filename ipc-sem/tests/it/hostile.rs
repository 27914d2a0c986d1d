//! Files that are not what they should be, under a name or at a System V set's companion path:
//! truncated or foreign files, symbolic links, FIFOs, directories, other users' files. Each is a
//! typed error (never `SIGBUS`, never a hang) or is replaced, and nothing else is touched.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipc_sem::{Error, Key, NamedMutex, NamedSemaphore, OwnerCheck, SemSet};
use ipc_testkit::{Proc, Watchdog, test_path};

fn sem_file(name: &str) -> PathBuf {
    format!("/dev/shm/sem.{}", &name[1..]).into()
}

fn mutex_file(name: &str) -> PathBuf {
    format!("/dev/shm/{}", &name[1..]).into()
}

/// Removes a planted path even if the test fails.
struct Planted(PathBuf);

impl Drop for Planted {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn plant_file(path: &Path, bytes: &[u8]) -> Planted {
    std::fs::write(path, bytes).unwrap();
    Planted(path.to_owned())
}

#[test]
fn a_truncated_or_foreign_file_is_a_typed_error_never_sigbus() {
    for len in [0usize, 1, 16, 31, 33, 4096] {
        let name = ipc_testkit::posix_name("hz");
        let _f = plant_file(&sem_file(&name), &vec![0; len]);
        match NamedSemaphore::open(&name) {
            Err(Error::WrongSize {
                expected: 32,
                found,
                ..
            }) => assert_eq!(found, len as u64),
            other => panic!("semaphore file of {len} bytes: {:?}", other.map(drop)),
        }
        // It belongs to nobody: remove_stale may remove it.
        ipc_sem::remove_stale(&name).unwrap();
    }
    for len in [0usize, 40, 47, 49, 4096] {
        let name = ipc_testkit::posix_name("hz");
        let _f = plant_file(&mutex_file(&name), &vec![0; len]);
        match NamedMutex::open(&name) {
            Err(Error::WrongSize { found, .. }) => assert_eq!(found, len as u64),
            other => panic!("mutex file of {len} bytes: {:?}", other.map(drop)),
        }
    }
    // The right size, but not made by ipc-sem: zeroed (never initialised) or garbage.
    let name = ipc_testkit::posix_name("hz");
    let _f = plant_file(&mutex_file(&name), &[0; 48]);
    assert!(matches!(
        NamedMutex::open(&name),
        Err(Error::NotInitialized { .. })
    ));
    let name = ipc_testkit::posix_name("hz");
    let _f = plant_file(&mutex_file(&name), &[0x5a; 48]);
    assert!(matches!(
        NamedMutex::open(&name),
        Err(Error::InvalidObject { .. })
    ));
}

#[test]
fn links_fifos_and_directories_under_a_name_are_refused_and_left_alone() {
    let _wd = Watchdog::new("odd files", Duration::from_secs(30));
    let target = std::env::temp_dir().join(ipc_testkit::unique("hostile-target"));
    let _t = plant_file(&target, &[7; 32]);
    for (kind, file) in [
        ("sem", sem_file as fn(&str) -> PathBuf),
        ("mutex", mutex_file),
    ] {
        let open = |name: &str| match kind {
            "sem" => NamedSemaphore::open(name).map(drop),
            _ => NamedMutex::open(name).map(drop),
        };
        let create = |name: &str| match kind {
            "sem" => NamedSemaphore::create(name, 1).map(drop),
            _ => NamedMutex::create(name).map(drop),
        };
        let stale = |name: &str| match kind {
            "sem" => ipc_sem::remove_stale(name),
            _ => NamedMutex::remove_stale(name),
        };
        // A symbolic link: O_NOFOLLOW refuses it; create does not follow it either.
        let name = ipc_testkit::posix_name("hl");
        std::os::unix::fs::symlink(&target, file(&name)).unwrap();
        let _l = Planted(file(&name));
        assert!(
            matches!(open(&name), Err(Error::InvalidObject { .. })),
            "{kind} symlink"
        );
        assert!(matches!(create(&name), Err(Error::AlreadyExists { .. })));
        assert!(matches!(stale(&name), Err(Error::InvalidObject { .. })));
        assert!(
            std::fs::symlink_metadata(file(&name)).is_ok(),
            "the link stays"
        );
        assert_eq!(
            std::fs::read(&target).unwrap(),
            [7; 32],
            "the target is untouched"
        );

        // A FIFO: refused at once (a blocking open would wait for a writer).
        let name = ipc_testkit::posix_name("hf");
        let path = CString::new(file(&name).to_str().unwrap()).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            path.as_c_str(),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR,
            0,
        )
        .unwrap();
        let _p = Planted(file(&name));
        assert!(
            matches!(open(&name), Err(Error::InvalidObject { .. })),
            "{kind} fifo"
        );
        assert!(
            matches!(stale(&name), Err(Error::InvalidObject { .. })),
            "{kind} fifo"
        );

        // A directory.
        let name = ipc_testkit::posix_name("hd");
        std::fs::create_dir(file(&name)).unwrap();
        let _d = Planted(file(&name));
        assert!(
            matches!(open(&name), Err(Error::InvalidObject { .. })),
            "{kind} dir"
        );
        assert!(
            matches!(stale(&name), Err(Error::InvalidObject { .. })),
            "{kind} dir"
        );
        assert!(file(&name).is_dir(), "the directory stays");
    }
}

#[test]
fn a_file_of_another_user_is_wrong_owner_unless_asked() {
    let name = ipc_testkit::posix_name("hu");
    let sem = NamedSemaphore::options()
        .mode(0o666)
        .create(&name, 2)
        .unwrap();
    std::os::unix::fs::chown(sem_file(&name), Some(65534), None).unwrap();
    match NamedSemaphore::open(&name) {
        Err(Error::WrongOwner {
            name: n,
            expected,
            found,
        }) => {
            assert_eq!((n.as_str(), found), (name.as_str(), 65534));
            assert_eq!(expected, rustix::process::geteuid().as_raw());
        }
        other => panic!("{:?}", other.map(drop)),
    }
    let other = NamedSemaphore::options()
        .owner_check(OwnerCheck::AnyUid)
        .open(&name)
        .unwrap();
    assert_eq!(other.value().unwrap(), 2);
    drop((other, sem));
    assert!(
        !sem_file(&name).exists(),
        "the owner removed it (same inode)"
    );
}

// ---------------------------------------------------------------------------------------------
// The System V companion file

const NEXT_ID: i32 = 4242;

/// In a private IPC namespace (this thread only: `unshare` applies to the calling thread),
/// where `/proc/sys/kernel/sem_next_id` says which id the next set gets, so a companion file
/// can be planted for it. `/dev/shm` is shared with everyone, so the planted paths use an id
/// that other namespaces' sets are unlikely to have right now.
fn private_ipc_namespace() {
    // SAFETY: plain flag argument; affects only this thread's IPC namespace.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWIPC) };
    assert_eq!(rc, 0, "unshare(CLONE_NEWIPC)");
}

fn next_id(id: i32) {
    std::fs::write("/proc/sys/kernel/sem_next_id", id.to_string()).unwrap();
}

fn companion(id: i32) -> PathBuf {
    format!("/dev/shm/ipc-sysv-sem-{id}.owner").into()
}

fn ino(p: &Path) -> Option<u64> {
    std::fs::symlink_metadata(p).ok().map(|m| m.ino())
}

fn companion_cases() {
    private_ipc_namespace();
    let key = Key::new(ipc_testkit::sysv_key());
    let path = companion(NEXT_ID);
    assert!(ino(&path).is_none(), "{} exists already", path.display());

    // Left by a dead owner of an earlier set with this id (ours, regular, lock free): reused.
    let _left = plant_file(&path, b"");
    let before = ino(&path);
    next_id(NEXT_ID);
    let set = SemSet::create(key, &[1]).unwrap();
    assert_eq!(set.id(), NEXT_ID);
    assert_eq!(ino(&path), before, "reused");
    assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
    assert!(matches!(
        ipc_sem::sysv::remove_stale(key),
        Err(Error::OwnerAlive { .. })
    ));
    drop(set);
    assert!(ino(&path).is_none(), "removed with its set");

    // Locked by a live process (the owner of a set that is gone): replaced, not reused.
    let _held = plant_file(&path, b"");
    let old = std::fs::File::open(&path).unwrap();
    let lock = libc::flock {
        l_type: libc::F_RDLCK as i16,
        l_whence: libc::SEEK_SET as i16,
        l_start: 0x7fff_ffff_ffff_fffe,
        l_len: 1,
        l_pid: 0,
    };
    // SAFETY: `old` is open; F_OFD_SETLK reads one flock, valid for the call.
    let rc = unsafe {
        libc::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&old),
            libc::F_OFD_SETLK,
            &lock,
        )
    };
    assert_eq!(rc, 0);
    let before = ino(&path);
    next_id(NEXT_ID);
    let set = SemSet::create(key, &[1]).unwrap();
    assert_eq!(set.id(), NEXT_ID);
    assert_ne!(ino(&path), before, "replaced");
    drop(set);
    assert!(ino(&path).is_none());
    drop(old);

    // A symbolic link, or another user's file: replaced; the link's target is untouched.
    let target = std::env::temp_dir().join(ipc_testkit::unique("companion-target"));
    let _t = plant_file(&target, b"keep");
    std::os::unix::fs::symlink(&target, &path).unwrap();
    let _l = Planted(path.clone());
    next_id(NEXT_ID);
    let set = SemSet::create(key, &[1]).unwrap();
    assert!(
        std::fs::symlink_metadata(&path).unwrap().is_file(),
        "a file now"
    );
    drop(set);
    assert_eq!(std::fs::read(&target).unwrap(), b"keep");
    let _o = plant_file(&path, b"");
    std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
    next_id(NEXT_ID);
    let set = SemSet::create(key, &[1]).unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().uid(),
        rustix::process::geteuid().as_raw()
    );
    drop(set);

    // Something that cannot be replaced (a directory): create fails and leaves no set.
    std::fs::create_dir(&path).unwrap();
    let _d = Planted(path.clone());
    next_id(NEXT_ID);
    let r = SemSet::create(key, &[1]);
    assert!(
        r.is_err(),
        "created despite a directory at the companion path"
    );
    assert!(
        matches!(SemSet::open(key), Err(Error::NotFound { .. })),
        "the set was removed"
    );
}

#[test]
fn a_companion_file_left_behind_is_reused_or_replaced() {
    if ipc_testkit::role().is_some() {
        companion_cases();
        return;
    }
    let _wd = Watchdog::new("companion", Duration::from_secs(60));
    Proc::spawn(&mut ipc_testkit::child(
        &test_path!(a_companion_file_left_behind_is_reused_or_replaced),
        "ipcns",
    ))
    .unwrap()
    .expect_success(Duration::from_secs(50));
}

/// A `sem_t` of glibc's layout (64-bit): value, waiters, the futex flag.
fn sem_bytes(value: u32, waiters: u32, private: i32) -> Vec<u8> {
    let mut b = Vec::with_capacity(32);
    b.extend(value.to_le_bytes());
    b.extend(waiters.to_le_bytes());
    b.extend(private.to_le_bytes());
    b.extend([0; 20]);
    b
}

#[test]
fn a_semaphore_file_of_garbage_is_refused_before_glibc_sees_it() {
    // A file of the right size whose sem_t is no process-shared semaphore: glibc would take a
    // garbage futex flag into its futex calls and abort the process.
    for (what, bytes) in [
        ("garbage", vec![0xff; 32]),
        ("a private semaphore's flag", sem_bytes(1, 1, 0)),
        ("an odd flag", sem_bytes(1, 1, 0x1234)),
        ("a value over SEM_VALUE_MAX", sem_bytes(0x8000_0000, 0, 128)),
    ] {
        let name = ipc_testkit::posix_name("hg");
        let _f = plant_file(&sem_file(&name), &bytes);
        match NamedSemaphore::open(&name) {
            Err(Error::InvalidObject { .. }) => {}
            other => panic!("{what}: {:?}", other.map(drop)),
        }
    }
    // One written by hand in glibc's layout opens, with its value.
    let name = ipc_testkit::posix_name("hg");
    let _f = plant_file(&sem_file(&name), &sem_bytes(3, 0, 128));
    let sem = NamedSemaphore::open(&name).unwrap();
    assert_eq!(sem.value().unwrap(), 3);
    sem.try_wait().unwrap();
    assert_eq!(
        std::fs::read(sem_file(&name)).unwrap(),
        sem_bytes(2, 0, 128)
    );
}

/// Maps the whole of a small file or memfd `fd` shared, runs `f` on its bytes, unmaps.
fn scribble(fd: &impl std::os::fd::AsFd, len: usize, f: impl FnOnce(&mut [u8])) {
    // SAFETY: a new shared mapping of `len` bytes of the file, at an address the kernel picks.
    let p = unsafe {
        rustix::mm::mmap(
            std::ptr::null_mut(),
            len,
            rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
            rustix::mm::MapFlags::SHARED,
            fd,
            0,
        )
    }
    .unwrap();
    // SAFETY: the mapping is `len` bytes; nothing in this process uses those bytes while the
    // slice lives (the handles that map the same file are not used meanwhile).
    f(unsafe { std::slice::from_raw_parts_mut(p.cast::<u8>(), len) });
    // SAFETY: our mapping, no longer referenced.
    unsafe { rustix::mm::munmap(p, len) }.unwrap();
}

#[test]
fn a_ready_slot_whose_object_was_scribbled_over_is_refused() {
    use std::os::fd::AsFd;
    // Anonymous: a real SharedSemaphore / SharedMutex, then a peer overwrites the object
    // behind the state word.
    let sem = ipc_sem::SharedSemaphore::new(1).unwrap();
    scribble(&sem.as_fd(), ipc_sem::RawSemaphore::SIZE, |b| {
        b[16..20].fill(0x77)
    });
    let r = ipc_sem::SharedSemaphore::from_fd(sem.as_fd().try_clone_to_owned().unwrap());
    assert!(
        matches!(r, Err(Error::InvalidObject { .. })),
        "{:?}",
        r.map(drop)
    );
    let m = ipc_sem::SharedMutex::new().unwrap();
    scribble(&m.as_fd(), ipc_sem::RawRobustMutex::SIZE, |b| {
        b[24..28].fill(0x01)
    });
    let r = ipc_sem::SharedMutex::from_fd(m.as_fd().try_clone_to_owned().unwrap());
    assert!(
        matches!(r, Err(Error::InvalidObject { .. })),
        "{:?}",
        r.map(drop)
    );
    // Named mutex.
    let name = ipc_testkit::posix_name("hs");
    let owner = NamedMutex::create(&name).unwrap();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(mutex_file(&name))
        .unwrap();
    scribble(&file, ipc_sem::RawRobustMutex::SIZE, |b| {
        b[24..28].fill(0xff)
    });
    let r = NamedMutex::open(&name);
    assert!(
        matches!(r, Err(Error::InvalidObject { .. })),
        "{:?}",
        r.map(drop)
    );
    drop(owner);
    // In place.
    let mut slot = Box::new(ipc_sem::RawSemaphore::new());
    let p = std::ptr::NonNull::from(&mut *slot);
    // SAFETY: a zeroed slot that outlives the handles.
    let first = unsafe { ipc_sem::InPlaceSemaphore::init(p, 1) }.unwrap();
    // SAFETY: bytes 16..20 of the slot are the sem_t's futex flag (inside the slot).
    let flag = unsafe { p.cast::<u8>().add(16) }.cast::<u32>();
    // SAFETY: aligned, inside the slot; no handle uses the slot meanwhile.
    unsafe { flag.write(0x77) };
    // SAFETY: as above.
    let r = unsafe { ipc_sem::InPlaceSemaphore::attach(p) };
    assert!(
        matches!(r, Err(Error::InvalidObject { .. })),
        "{:?}",
        r.map(drop)
    );
    // The handle made before keeps working on what is there (the flags are looked at when a
    // handle is made; a try_wait needs no futex call).
    first.try_wait().unwrap();
}

#[test]
fn another_user_cannot_remove_a_live_owners_objects_as_stale() {
    const NAME_ENV: &str = "IPC_SEM_TEST_NAME";
    const KEY_ENV: &str = "IPC_SEM_TEST_KEY";
    if ipc_testkit::role().is_some() {
        // SAFETY: setuid has no memory-safety preconditions; glibc applies it to all threads
        // of this child.
        assert_eq!(unsafe { libc::setuid(65534) }, 0);
        let name = std::env::var(NAME_ENV).unwrap();
        let key = Key::new(std::env::var(KEY_ENV).unwrap().parse().unwrap());
        for r in [
            ipc_sem::remove_stale(&name),
            NamedMutex::remove_stale(&name),
            ipc_sem::sysv::remove_stale(key),
        ] {
            assert!(matches!(r, Err(Error::PermissionDenied { .. })), "{r:?}");
        }
        return;
    }
    let _wd = Watchdog::new("stale as nobody", Duration::from_secs(30));
    let name = ipc_testkit::posix_name("hn");
    let sem = NamedSemaphore::create(&name, 1).unwrap();
    let mutex = NamedMutex::create(&name).unwrap();
    let set = crate::shared::new_set(&[1]);
    let key = crate::lifetime::K::Set.key_of(set.id());
    let mut cmd = ipc_testkit::child(
        &test_path!(another_user_cannot_remove_a_live_owners_objects_as_stale),
        "nobody",
    );
    cmd.env(NAME_ENV, &name).env(KEY_ENV, key.to_string());
    Proc::spawn(&mut cmd)
        .unwrap()
        .expect_success(Duration::from_secs(20));
    assert!(sem_file(&name).exists() && mutex_file(&name).exists());
    assert_eq!(set.values().unwrap(), [1]);
    drop((sem, mutex, set));
}
