//! The error type.

use std::io;

use ipc_sem::Error;

#[test]
fn error_is_send_sync_static_and_converts_to_io_error() {
    fn assert_traits<T: std::error::Error + Send + Sync + 'static>() {}
    assert_traits::<Error>();
    let cases = [
        (Error::TimedOut, io::ErrorKind::TimedOut),
        (Error::WouldBlock, io::ErrorKind::WouldBlock),
        (
            Error::AlreadyExists { name: "/x".into() },
            io::ErrorKind::AlreadyExists,
        ),
        (
            Error::NotFound { name: "/x".into() },
            io::ErrorKind::NotFound,
        ),
        (
            Error::PermissionDenied { name: "/x".into() },
            io::ErrorKind::PermissionDenied,
        ),
        (Error::EmptySet, io::ErrorKind::InvalidInput),
    ];
    for (e, kind) in cases {
        let text = e.to_string();
        assert!(
            !text.ends_with('.') && !text.chars().next().unwrap().is_uppercase(),
            "{text}"
        );
        assert_eq!(io::Error::from(e).kind(), kind);
    }
    let raw = io::Error::from_raw_os_error(libc::EBADF);
    let e = Error::from(raw);
    assert!(std::error::Error::source(&e).is_some());
    assert_eq!(io::Error::from(e).raw_os_error(), Some(libc::EBADF));
}

#[test]
fn errors_about_an_object_name_it() {
    use ipc_sem::{Key, NamedMutex, NamedSemaphore, SemSet};
    let name = ipc_testkit::posix_name("err");
    for e in [
        NamedSemaphore::open(&name).unwrap_err(),
        NamedMutex::open(&name).unwrap_err(),
        ipc_sem::unlink(&name).unwrap_err(),
        ipc_sem::remove_stale(&name).unwrap_err(),
    ] {
        assert!(matches!(e, Error::NotFound { .. }), "{e:?}");
        assert!(e.to_string().contains(&name), "{e}");
    }
    let sem = NamedSemaphore::create(&name, 0).unwrap();
    let e = NamedSemaphore::create(&name, 0).unwrap_err();
    assert!(
        matches!(&e, Error::AlreadyExists { name: n } if *n == name),
        "{e:?}"
    );
    assert_eq!(io::Error::from(e).kind(), io::ErrorKind::AlreadyExists);
    let e = ipc_sem::remove_stale(&name).unwrap_err();
    assert!(
        matches!(&e, Error::OwnerAlive { name: n } if *n == name),
        "{e:?}"
    );
    assert_eq!(io::Error::from(e).kind(), io::ErrorKind::ResourceBusy);
    drop(sem);

    let key = Key::new(0x4950_fffe_u32 as i32);
    let e = SemSet::open(key).unwrap_err();
    assert!(e.to_string().contains("key 0x4950fffe"), "{e}");
    let e = ipc_sem::sysv::remove(i32::MAX).unwrap_err();
    assert!(e.to_string().contains(&format!("id {}", i32::MAX)), "{e}");
    let e = SemSet::open_id(i32::MAX).unwrap_err();
    assert!(
        matches!(e, Error::NotFound { .. }) && e.to_string().contains("id "),
        "{e}"
    );

    let long = format!("/{}", "x".repeat(300));
    let e = NamedSemaphore::open(&long).unwrap_err();
    assert!(
        matches!(&e, Error::InvalidName { name: n, .. } if *n == long),
        "{e:?}"
    );
    assert_eq!(io::Error::from(e).kind(), io::ErrorKind::InvalidInput);

    let e = Error::WrongOwner {
        name: "/x".into(),
        expected: 1000,
        found: 0,
    };
    assert!(
        e.to_string().contains(".owner_check(OwnerCheck::AnyUid)"),
        "{e}"
    );
    assert_eq!(io::Error::from(e).kind(), io::ErrorKind::PermissionDenied);
    let e = Error::InvalidMode { mode: 0o1777 };
    assert_eq!(
        e.to_string(),
        "invalid mode 0o1777: only the permission bits 0o777 may be set"
    );
    for e in [
        Error::InvalidObject {
            name: "/x".into(),
            reason: "r",
        },
        Error::WrongSize {
            name: "/x".into(),
            expected: 32,
            found: 0,
        },
        Error::InitializerDied {
            name: "/x".into(),
            pid: 1,
        },
    ] {
        assert!(e.to_string().starts_with("/x "), "{e}");
        assert_eq!(io::Error::from(e).kind(), io::ErrorKind::InvalidData);
    }
}

#[test]
fn handles_are_send_and_sync_and_guards_of_a_mutex_are_not_send() {
    use ipc_sem::*;
    static_assertions::assert_impl_all!(NamedSemaphore: Send, Sync, std::fmt::Debug);
    static_assertions::assert_impl_all!(SharedSemaphore: Send, Sync, std::fmt::Debug);
    static_assertions::assert_impl_all!(InPlaceSemaphore: Send, Sync, std::fmt::Debug);
    static_assertions::assert_impl_all!(SemSet: Send, Sync, std::fmt::Debug);
    static_assertions::assert_impl_all!(EventSemaphore: Send, Sync, std::fmt::Debug);
    static_assertions::assert_impl_all!(RobustMutex: Send, Sync, std::fmt::Debug);
    static_assertions::assert_impl_all!(SharedMutex: Send, Sync, std::fmt::Debug);
    static_assertions::assert_impl_all!(NamedMutex: Send, Sync, std::fmt::Debug);
    static_assertions::assert_impl_all!(RawSemaphore: Send, Sync);
    static_assertions::assert_impl_all!(RawRobustMutex: Send, Sync);
    static_assertions::assert_not_impl_any!(MutexGuard<'static>: Send);
    static_assertions::assert_not_impl_any!(OwnerDiedGuard<'static>: Send);
    static_assertions::assert_impl_all!(
        NamedSemaphoreOptions: Copy,
        Default,
        PartialEq,
        std::fmt::Debug
    );
    static_assertions::assert_impl_all!(SemSetOptions: Copy, Default, PartialEq);
    static_assertions::assert_impl_all!(NamedMutexOptions: Copy, Default, PartialEq);
    assert_eq!(NamedSemaphoreOptions::default(), NamedSemaphore::options());
    assert_eq!(SemSetOptions::default(), SemSet::options());
    assert_eq!(NamedMutexOptions::default(), NamedMutex::options());
    assert_eq!(OnDrop::default(), OnDrop::Remove);
    assert_eq!(OwnerCheck::default(), OwnerCheck::SameUid);
}
