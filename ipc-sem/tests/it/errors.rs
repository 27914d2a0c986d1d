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
