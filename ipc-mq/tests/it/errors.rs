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
        (Error::InvalidName, io::ErrorKind::InvalidInput),
        (Error::AlreadyExists, io::ErrorKind::AlreadyExists),
        (Error::NotFound, io::ErrorKind::NotFound),
        (Error::TimedOut, io::ErrorKind::TimedOut),
        (Error::WouldBlock, io::ErrorKind::WouldBlock),
        (Error::PermissionDenied, io::ErrorKind::PermissionDenied),
        (
            Error::MessageTooLarge { len: 65, max: 64 },
            io::ErrorKind::InvalidInput,
        ),
        (
            Error::InvalidSignal { signal: 32 },
            io::ErrorKind::InvalidInput,
        ),
        (Error::NotifyBusy, io::ErrorKind::ResourceBusy),
        (Error::Removed, io::ErrorKind::NotFound),
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
