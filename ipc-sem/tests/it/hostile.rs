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
