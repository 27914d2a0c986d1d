use std::io;

use ipc_fifo::{Error, FileKind};

#[test]
fn error_is_send_sync_static_and_converts_to_io_kinds() {
    fn assert_bounds<T: Send + Sync + 'static + std::error::Error>() {}
    assert_bounds::<Error>();
    let cases = [
        (Error::AlreadyExists, io::ErrorKind::AlreadyExists),
        (Error::NotFound, io::ErrorKind::NotFound),
        (Error::NoReader, io::ErrorKind::BrokenPipe),
        (Error::TimedOut, io::ErrorKind::TimedOut),
        (Error::WouldBlock, io::ErrorKind::WouldBlock),
        (Error::InvalidName, io::ErrorKind::InvalidInput),
        (
            Error::WrongOwner {
                expected: 0,
                found: 65534,
            },
            io::ErrorKind::PermissionDenied,
        ),
        (
            Error::NotAFifo {
                found: FileKind::Regular,
            },
            io::ErrorKind::InvalidInput,
        ),
    ];
    for (e, kind) in cases {
        let text = e.to_string();
        assert!(!text.ends_with('.'), "{text}");
        assert!(text.chars().next().unwrap().is_lowercase(), "{text}");
        assert_eq!(io::Error::from(e).kind(), kind);
    }
    // A record that is too large says what the limit is and why.
    let e = Error::MessageTooLarge {
        len: 4093,
        max: ipc_fifo::RECORD_MAX,
    };
    let text = e.to_string();
    for part in [
        "4093",
        "4092",
        "PIPE_BUF = 4096",
        "4-byte length prefix",
        "frames",
    ] {
        assert!(text.contains(part), "{text:?} lacks {part:?}");
    }
    assert_eq!(io::Error::from(e).kind(), io::ErrorKind::InvalidInput);
    // A frame that is too large does not talk about records.
    let text = Error::MessageTooLarge {
        len: 10 << 20,
        max: 1 << 20,
    }
    .to_string();
    assert_eq!(
        text,
        "message of 10485760 bytes is larger than the maximum of 1048576"
    );

    let inner = io::Error::from_raw_os_error(libc::EMFILE);
    let e = Error::Io(inner);
    assert!(std::error::Error::source(&e).is_some());
    assert_eq!(io::Error::from(e).raw_os_error(), Some(libc::EMFILE));
}

#[test]
fn invalid_paths_are_refused_before_any_syscall() {
    assert!(matches!(
        ipc_fifo::Fifo::create(""),
        Err(Error::InvalidName)
    ));
    assert!(matches!(
        ipc_fifo::FifoReader::try_open("/tmp/a\0b"),
        Err(Error::InvalidName)
    ));
    assert!(matches!(
        ipc_fifo::FifoWriter::try_open(""),
        Err(Error::InvalidName)
    ));
    let dir = crate::place();
    for bad in ["", ".", "..", "a/b", "a\0b"] {
        assert!(matches!(dir.join(bad), Err(Error::InvalidName)), "{bad:?}");
    }
}
