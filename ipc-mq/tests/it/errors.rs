//! The error type's contract.

use std::io;

use ipc_mq::{Error, Limit};

#[test]
fn error_is_send_sync_static() {
    fn check<T: Send + Sync + 'static + std::error::Error>() {}
    check::<Error>();
}

#[test]
fn errors_convert_to_io_errors_of_the_right_kind() {
    let cases = [
        (
            Error::InvalidName {
                name: "x".into(),
                reason: "bad",
            },
            io::ErrorKind::InvalidInput,
        ),
        (
            Error::InvalidMode { mode: 0o1777 },
            io::ErrorKind::InvalidInput,
        ),
        (
            Error::AlreadyExists { name: "/q".into() },
            io::ErrorKind::AlreadyExists,
        ),
        (
            Error::NotFound { name: "/q".into() },
            io::ErrorKind::NotFound,
        ),
        (Error::TimedOut, io::ErrorKind::TimedOut),
        (Error::WouldBlock, io::ErrorKind::WouldBlock),
        (
            Error::PermissionDenied { name: "/q".into() },
            io::ErrorKind::PermissionDenied,
        ),
        (
            Error::WrongOwner {
                name: "/q".into(),
                expected: 1,
                found: 0,
            },
            io::ErrorKind::PermissionDenied,
        ),
        (
            Error::NotOwner { name: "/q".into() },
            io::ErrorKind::PermissionDenied,
        ),
        (
            Error::OwnerAlive { name: "/q".into() },
            io::ErrorKind::ResourceBusy,
        ),
        (
            Error::MessageTooLarge { len: 65, max: 64 },
            io::ErrorKind::InvalidInput,
        ),
        (
            Error::InvalidSignal { signal: 32 },
            io::ErrorKind::InvalidInput,
        ),
        (
            Error::NotifyBusy { name: "/q".into() },
            io::ErrorKind::ResourceBusy,
        ),
        (
            Error::Removed {
                name: "id 1".into(),
            },
            io::ErrorKind::NotFound,
        ),
        (
            Error::LimitExceeded {
                what: Limit::QueuesMax,
                requested: 257,
                limit: 256,
            },
            io::ErrorKind::QuotaExceeded,
        ),
    ];
    for (e, kind) in cases {
        assert_eq!(io::Error::from(e).kind(), kind);
    }
    let raw = io::Error::from_raw_os_error(libc::EBADF);
    let back = io::Error::from(Error::from(raw));
    assert_eq!(back.raw_os_error(), Some(libc::EBADF));
}

#[test]
fn limit_messages_name_the_limit_its_value_and_the_fix() {
    let e = Error::LimitExceeded {
        what: Limit::MsgMax,
        requested: 11,
        limit: 10,
    };
    let s = e.to_string();
    assert!(
        s.contains("msg_max") && s.contains("11") && s.contains("10"),
        "{s}"
    );
    assert!(s.contains("sysctl fs.mqueue.msg_max"), "{s}");
    assert!(!s.ends_with('.'));
}
