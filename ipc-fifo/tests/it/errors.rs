use std::io;
use std::path::Path;

use ipc_fifo::{Error, Fifo, FifoReader, FifoWriter, FileKind, PrivateDir};

#[test]
fn error_is_send_sync_static_and_converts_to_io_kinds() {
    fn assert_bounds<T: Send + Sync + 'static + std::error::Error>() {}
    assert_bounds::<Error>();
    let p = || Path::new("/run/x").to_owned();
    let cases = [
        (
            Error::AlreadyExists { path: p() },
            io::ErrorKind::AlreadyExists,
        ),
        (
            Error::NotFound {
                path: p(),
                dir_exists: true,
            },
            io::ErrorKind::NotFound,
        ),
        (
            Error::PermissionDenied { path: p() },
            io::ErrorKind::PermissionDenied,
        ),
        (Error::NoReader, io::ErrorKind::BrokenPipe),
        (Error::TimedOut, io::ErrorKind::TimedOut),
        (Error::WouldBlock, io::ErrorKind::WouldBlock),
        (
            Error::InvalidName {
                path: p(),
                reason: "r",
            },
            io::ErrorKind::InvalidInput,
        ),
        (
            Error::InvalidMode { mode: 0o4755 },
            io::ErrorKind::InvalidInput,
        ),
        (
            Error::WrongOwner {
                path: p(),
                expected: 0,
                found: 65534,
            },
            io::ErrorKind::PermissionDenied,
        ),
        (Error::OwnerAlive { path: p() }, io::ErrorKind::ResourceBusy),
        (
            Error::NotOwner { path: p() },
            io::ErrorKind::PermissionDenied,
        ),
        (
            Error::NotAFifo {
                path: p(),
                found: FileKind::Regular,
            },
            io::ErrorKind::InvalidInput,
        ),
        (
            Error::NotPrivate {
                path: p(),
                mode: 0o755,
                uid: 0,
            },
            io::ErrorKind::PermissionDenied,
        ),
        (Error::Truncated, io::ErrorKind::UnexpectedEof),
    ];
    for (e, kind) in cases {
        let text = e.to_string();
        assert!(!text.ends_with('.'), "{text}");
        assert!(!text.chars().next().unwrap().is_uppercase(), "{text}");
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
    let dir = crate::place();
    let long = "n".repeat(256);
    let deep = format!("{}/", "d".repeat(200)).repeat(21); // 4221 bytes
    let bad: Vec<std::path::PathBuf> = vec![
        "".into(),
        "/tmp/a\0b".into(),
        dir.path().join(&long),
        dir.path().join(&deep).join("f"),
        dir.path().join("f/"),
        dir.path().join("."),
        dir.path().join(".."),
        "/".into(),
    ];
    for p in &bad {
        let checks: [(&str, Result<(), Error>); 8] = [
            ("create", Fifo::create(p).map(drop)),
            ("open", Fifo::open(p).map(drop)),
            ("reader", FifoReader::try_open(p).map(drop)),
            (
                "reader timeout",
                FifoReader::open_timeout(p, std::time::Duration::ZERO).map(drop),
            ),
            ("writer", FifoWriter::try_open(p).map(drop)),
            ("unlink", ipc_fifo::unlink(p)),
            ("remove_stale", ipc_fifo::remove_stale(p)),
            ("dir", PrivateDir::open_or_create(p).map(drop)),
        ];
        for (what, r) in checks {
            // Paths that name something (`/`, `dir/.`) are refused for not ending in a name;
            // too long ones say so; all are InvalidName with the path.
            match r {
                Err(Error::InvalidName { path, reason }) => {
                    assert_eq!(&path, p, "{what}");
                    assert!(!reason.is_empty());
                }
                other => panic!("{what} {p:?}: {other:?}"),
            }
        }
    }
    // One errno, one meaning: a component longer than NAME_MAX is InvalidName, not Io.
    match Fifo::create(dir.path().join(&long)) {
        Err(e @ Error::InvalidName { .. }) => assert!(e.to_string().contains("NAME_MAX"), "{e}"),
        other => panic!("{other:?}"),
    }
    match FifoWriter::try_open(dir.path().join(&deep).join("f")) {
        Err(e @ Error::InvalidName { .. }) => assert!(e.to_string().contains("PATH_MAX"), "{e}"),
        other => panic!("{other:?}"),
    }
    for bad in ["", ".", "..", "a/b", "a\0b", &long] {
        assert!(
            matches!(dir.join(bad), Err(Error::InvalidName { .. })),
            "{bad:?}"
        );
    }
    assert!(matches!(
        Fifo::options().mode(0o1777).create(dir.path().join("m")),
        Err(Error::InvalidMode { mode: 0o1777 })
    ));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn errors_say_which_path_and_what_to_do() {
    let dir = crate::place();
    let missing = dir.join("missing").unwrap();
    let e = FifoWriter::try_open(&missing).unwrap_err();
    assert!(
        matches!(
            e,
            Error::NotFound {
                dir_exists: true,
                ..
            }
        ),
        "{e:?}"
    );
    let text = e.to_string();
    assert!(text.contains(&missing.display().to_string()), "{text}");
    assert!(text.contains("its directory exists"), "{text}");

    let nodir = dir.join("nodir").unwrap().join("f");
    let e = FifoReader::try_open(&nodir).unwrap_err();
    assert!(
        matches!(
            e,
            Error::NotFound {
                dir_exists: false,
                ..
            }
        ),
        "{e:?}"
    );
    let text = e.to_string();
    assert!(text.contains(&nodir.display().to_string()), "{text}");
    assert!(text.contains("does not exist"), "{text}");
    let e = Fifo::create(&nodir).unwrap_err();
    assert!(
        matches!(
            e,
            Error::NotFound {
                dir_exists: false,
                ..
            }
        ),
        "{e:?}"
    );
    // A "directory" that is a regular file (ENOTDIR): no such directory either.
    let file = dir.join("plain").unwrap();
    std::fs::write(&file, b"x").unwrap();
    for e in [
        FifoReader::try_open(file.join("f")).unwrap_err(),
        Fifo::create(file.join("f")).unwrap_err(),
        ipc_fifo::remove_stale(file.join("f")).unwrap_err(),
    ] {
        assert!(
            matches!(
                e,
                Error::NotFound {
                    dir_exists: false,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("not a directory"), "{e}");
    }

    let fifo = Fifo::create(dir.join("f").unwrap()).unwrap();
    let e = Fifo::create(fifo.path()).unwrap_err();
    assert!(
        e.to_string().contains(&fifo.path().display().to_string()),
        "{e}"
    );
    assert!(e.to_string().contains("replace_stale"), "{e}");
    let e = ipc_fifo::remove_stale(fifo.path()).unwrap_err();
    assert!(
        matches!(&e, Error::OwnerAlive { path } if path == fifo.path()),
        "{e:?}"
    );

    let file = dir.join("file").unwrap();
    std::fs::write(&file, b"x").unwrap();
    let e = FifoReader::try_open(&file).unwrap_err();
    assert!(e.to_string().contains(&file.display().to_string()), "{e}");
    assert!(e.to_string().contains("not a FIFO"), "{e}");

    // Another user's FIFO: refused, and the message names the option that accepts it.
    rustix::fs::chown(
        fifo.path(),
        Some(rustix::process::Uid::from_raw(65534)),
        None,
    )
    .unwrap();
    for e in [
        FifoReader::try_open(fifo.path()).unwrap_err(),
        FifoWriter::try_open(fifo.path()).unwrap_err(),
        Fifo::open(fifo.path()).unwrap_err(),
    ] {
        assert!(matches!(e, Error::WrongOwner { found: 65534, .. }), "{e:?}");
        let text = e.to_string();
        assert!(text.contains("owner_check(OwnerCheck::AnyUid)"), "{text}");
        assert!(text.contains(&fifo.path().display().to_string()), "{text}");
    }
}
