//! Bad input gives typed errors and creates nothing; permissions hold.

use std::time::Duration;

use ipc_sem::{
    Error, InPlaceSemaphore, Key, NamedSemaphore, RawSemaphore, SEM_VALUE_MAX, SEMVMX, SemOp,
    SemSet, SharedSemaphore,
};
use ipc_testkit::{Proc, Watchdog, test_path};

fn dev_shm(name: &str) -> std::path::PathBuf {
    format!("/dev/shm/sem.{}", &name[1..]).into()
}

#[test]
fn bad_names_are_rejected_before_any_syscall() {
    let long = format!("/{}", "x".repeat(252));
    for bad in [
        "",
        "ipcrs-noslash",
        "/",
        "/ipcrs/a",
        "/.",
        "/..",
        "/ipcrs\0x",
        long.as_str(),
    ] {
        assert!(
            matches!(
                NamedSemaphore::create(bad, 0),
                Err(Error::InvalidName { .. })
            ),
            "create {bad:?}"
        );
        assert!(matches!(
            NamedSemaphore::open(bad),
            Err(Error::InvalidName { .. })
        ));
        assert!(matches!(
            ipc_sem::unlink(bad),
            Err(Error::InvalidName { .. })
        ));
    }
    assert!(!std::path::Path::new("/dev/shm/sem.ipcrs-noslash").exists());
    // 251 bytes after the slash is the longest name that works.
    let base = ipc_testkit::posix_name("long");
    let longest = format!("{base}{}", "y".repeat(252 - base.len()));
    assert_eq!(longest.len(), 252);
    let sem = NamedSemaphore::create(&longest, 0).unwrap();
    assert!(dev_shm(&longest).exists());
    drop(sem);
    assert!(!dev_shm(&longest).exists(), "the owner unlinked it");
}

#[test]
fn values_over_the_maximum_are_rejected_and_post_overflow_is_typed() {
    let name = ipc_testkit::posix_name("big");
    assert!(matches!(
        NamedSemaphore::create(&name, SEM_VALUE_MAX + 1),
        Err(Error::ValueTooLarge { .. })
    ));
    assert!(
        matches!(NamedSemaphore::open(&name), Err(Error::NotFound { .. })),
        "nothing created"
    );
    assert!(matches!(
        SharedSemaphore::new(u32::MAX),
        Err(Error::ValueTooLarge { .. })
    ));

    // The in-place constructor checks before it writes: the slot keeps its bytes.
    let mut slot = std::mem::MaybeUninit::<RawSemaphore>::zeroed();
    let ptr = std::ptr::NonNull::new(slot.as_mut_ptr()).unwrap();
    // SAFETY: aligned, writable memory that nothing else uses; nothing is initialised.
    let r = unsafe { InPlaceSemaphore::init(ptr, SEM_VALUE_MAX + 1) };
    assert!(matches!(r, Err(Error::ValueTooLarge { .. })));
    // SAFETY: `slot` is plain bytes (zeroed above); read them as such.
    let bytes: [u8; RawSemaphore::SIZE] = unsafe { std::mem::transmute_copy(&slot) };
    assert!(bytes.iter().all(|&b| b == 0), "nothing written");

    let full = NamedSemaphore::create(&name, SEM_VALUE_MAX).unwrap();
    assert!(matches!(full.post(), Err(Error::Overflow)));
    assert_eq!(full.value().unwrap(), SEM_VALUE_MAX);
    let shared = SharedSemaphore::new(SEM_VALUE_MAX).unwrap();
    assert!(matches!(shared.post(), Err(Error::Overflow)));

    let key = ipc_testkit::sysv_key();
    assert!(matches!(
        SemSet::create(Key::new(key), &[1, SEMVMX + 1]),
        Err(Error::ValueTooLarge { .. })
    ));
    assert!(matches!(
        SemSet::open(Key::new(key)),
        Err(Error::NotFound { .. })
    ));
    let set = crate::shared::new_set(&[SEMVMX]);
    assert!(matches!(set.apply(&[SemOp::post(0)]), Err(Error::Overflow)));
    assert!(matches!(
        set.set_value(0, SEMVMX + 1),
        Err(Error::ValueTooLarge { .. })
    ));
    assert_eq!(set.value(0).unwrap(), SEMVMX);
}

#[test]
fn empty_sets_and_indexes_out_of_range_are_typed_errors() {
    let key = ipc_testkit::sysv_key();
    assert!(matches!(
        SemSet::create(Key::new(key), &[]),
        Err(Error::EmptySet)
    ));
    assert!(
        matches!(SemSet::open(Key::new(key)), Err(Error::NotFound { .. })),
        "nothing created"
    );
    let set = crate::shared::new_set(&[1, 1]);
    assert!(matches!(
        set.apply(&[SemOp::wait(0), SemOp::wait(2)]),
        Err(Error::IndexOutOfRange { index: 2, len: 2 })
    ));
    assert_eq!(set.values().unwrap(), [1, 1], "nothing applied");
    assert!(matches!(
        set.value(5),
        Err(Error::IndexOutOfRange { index: 5, len: 2 })
    ));
    assert!(matches!(
        set.set_value(2, 0),
        Err(Error::IndexOutOfRange { .. })
    ));
    assert!(matches!(
        set.set_values(&[1]),
        Err(Error::IndexOutOfRange { .. })
    ));
    assert!(matches!(
        SemSet::open(Key::PRIVATE),
        Err(Error::NotFound { .. })
    ));
}

#[test]
fn keyed_sets_are_exclusive_and_open_finds_them_initialised() {
    let (key, set) = loop {
        let key = ipc_testkit::sysv_key();
        match SemSet::create(Key::new(key), &[3, 0, 7]) {
            Ok(s) => break (key, s),
            Err(Error::AlreadyExists { .. }) => continue,
            Err(e) => panic!("{e}"),
        }
    };
    assert!(matches!(
        SemSet::create(Key::new(key), &[1]),
        Err(Error::AlreadyExists { .. })
    ));
    let opened = SemSet::open(Key::new(key)).unwrap();
    assert_eq!(opened.len(), 3);
    assert_eq!(opened.values().unwrap(), [3, 0, 7]);
    assert!(!opened.is_owner());
    drop(opened);
    assert_eq!(set.value(2).unwrap(), 7, "an opener removes nothing");
    set.set_values(&[1, 2, 3]).unwrap();
    assert_eq!(set.values().unwrap(), [1, 2, 3]);
    drop(set);
    assert!(
        matches!(SemSet::open(Key::new(key)), Err(Error::NotFound { .. })),
        "owner removed it"
    );
}

#[test]
fn a_set_removed_under_a_waiter_is_a_typed_error() {
    const ID_ENV: &str = "IPC_SEM_TEST_ID";
    if ipc_testkit::role().is_some() {
        let set = SemSet::open_id(std::env::var(ID_ENV).unwrap().parse().unwrap()).unwrap();
        match set.apply(&[SemOp::wait(0)]) {
            Err(Error::Removed { .. }) => return,
            other => panic!("expected Removed, got {other:?}"),
        }
    }
    let _wd = Watchdog::new("removed", Duration::from_secs(30));
    let set = crate::shared::new_set(&[0]);
    let mut cmd = ipc_testkit::child(
        &test_path!(a_set_removed_under_a_waiter_is_a_typed_error),
        "waiter",
    );
    cmd.env(ID_ENV, set.id().to_string());
    let child = Proc::spawn(&mut cmd).unwrap();
    crate::shared::spin_until(|| set.waiters(0).unwrap() == 1);
    let id = set.id();
    set.remove().unwrap();
    child.expect_success(Duration::from_secs(10));
    assert!(matches!(
        ipc_sem::sysv::remove(id),
        Err(Error::NotFound { .. })
    ));
}

/// The permission bits of System V set `id` (`semctl(IPC_STAT)`).
pub(crate) fn sysv_mode(id: i32) -> u32 {
    // SAFETY: `semid_ds` is plain data; all-zero is a valid value that IPC_STAT overwrites.
    let mut ds: libc::semid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: IPC_STAT writes one `semid_ds` through `union semun.buf`; `ds` is valid for it.
    let rc = unsafe { libc::semctl(id, 0, libc::IPC_STAT, &mut ds as *mut libc::semid_ds) };
    assert_eq!(rc, 0, "IPC_STAT");
    u32::from(ds.sem_perm.mode) & 0o777
}

#[test]
fn named_semaphores_are_0600_whatever_the_umask_and_closed_to_others() {
    const NAME_ENV: &str = "IPC_SEM_TEST_NAME";
    const ID_ENV: &str = "IPC_SEM_TEST_ID";
    let test = test_path!(named_semaphores_are_0600_whatever_the_umask_and_closed_to_others);
    match ipc_testkit::role().as_deref() {
        Some("umask") => {
            // Process-global change: only in this child.
            rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o277));
            let name = ipc_testkit::posix_name("mode");
            let sem = NamedSemaphore::create(&name, 0).unwrap();
            let st = rustix::fs::stat(dev_shm(&name)).unwrap();
            assert_eq!(st.st_mode & 0o777, 0o600);
            drop(sem);
            // An explicit mode is exact too, for both kinds of named object.
            let sem = NamedSemaphore::options()
                .mode(0o640)
                .create(&name, 0)
                .unwrap();
            let st = rustix::fs::stat(dev_shm(&name)).unwrap();
            assert_eq!(st.st_mode & 0o777, 0o640);
            drop(sem);
            let set = loop {
                let key = Key::new(ipc_testkit::sysv_key());
                match SemSet::options().mode(0o640).create(key, &[1]) {
                    Err(Error::AlreadyExists { .. }) => continue,
                    r => break r.unwrap(),
                }
            };
            assert_eq!(sysv_mode(set.id()), 0o640);
            set.set_mode(0o604).unwrap();
            assert_eq!(sysv_mode(set.id()), 0o604);
            drop(set);
            // Bits outside 0o777 are refused before anything is created.
            assert!(matches!(
                NamedSemaphore::options().mode(0o4600).create(&name, 0),
                Err(Error::InvalidMode { mode: 0o4600 })
            ));
            assert!(!dev_shm(&name).exists());
            return;
        }
        Some("nobody") => {
            // SAFETY: setuid has no memory-safety preconditions; glibc applies it to every
            // thread of this child process.
            assert_eq!(unsafe { libc::setuid(65534) }, 0);
            let name = std::env::var(NAME_ENV).unwrap();
            assert!(matches!(
                NamedSemaphore::open(&name),
                Err(Error::PermissionDenied { .. })
            ));
            let id = std::env::var(ID_ENV).unwrap().parse().unwrap();
            assert!(matches!(
                SemSet::open_id(id),
                Err(Error::PermissionDenied { .. })
            ));
            return;
        }
        _ => {}
    }
    let _wd = Watchdog::new("perm", Duration::from_secs(30));
    Proc::spawn(&mut ipc_testkit::child(&test, "umask"))
        .unwrap()
        .expect_success(Duration::from_secs(10));
    let name = ipc_testkit::posix_name("perm");
    let _sem = NamedSemaphore::create(&name, 1).unwrap();
    let set = crate::shared::new_set(&[1]);
    let mut cmd = ipc_testkit::child(&test, "nobody");
    cmd.env(NAME_ENV, &name).env(ID_ENV, set.id().to_string());
    Proc::spawn(&mut cmd)
        .unwrap()
        .expect_success(Duration::from_secs(10));
}

#[test]
fn open_refuses_a_symlink_planted_under_the_name() {
    let name = ipc_testkit::posix_name("sym");
    let path = dev_shm(&name);
    let target = std::env::temp_dir().join(ipc_testkit::unique("symtarget"));
    std::fs::write(&target, [0u8; 32]).unwrap();
    std::os::unix::fs::symlink(&target, &path).unwrap();
    let r = NamedSemaphore::open(&name);
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(&target);
    assert!(r.is_err(), "opened through a symlink");
    eprintln!("open through a symlink: {:?}", r.err());
}
