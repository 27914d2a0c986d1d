use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ipc_fifo::{
    Error, Fifo, FifoReader, FifoWriter, FileKind, KeepAlive, OwnerCheck, RecordReader,
};
use ipc_testkit::{Proc, Watchdog, child, fnv1a64, role, test_path};

use crate::{CHILD_LIMIT, PATH_ENV, child_path, place};

const SHORT: Duration = Duration::from_millis(200);

#[test]
fn open_with_timeout_and_no_peer_returns_the_typed_error_in_time() {
    let _wd = Watchdog::new("open_timeout_no_peer", Duration::from_secs(20));
    let dir = place();
    let fifo = Fifo::create(dir.join("alone").unwrap()).unwrap();

    assert!(matches!(
        FifoWriter::try_open(fifo.path()),
        Err(Error::NoReader)
    ));

    let t = Instant::now();
    let r = FifoWriter::open_timeout(fifo.path(), SHORT);
    let took = t.elapsed();
    assert!(matches!(r, Err(Error::TimedOut)), "{r:?}");
    assert!(
        took >= SHORT && took < SHORT + Duration::from_secs(2),
        "{took:?}"
    );

    let t = Instant::now();
    let r = FifoReader::open_timeout(fifo.path(), SHORT);
    let took = t.elapsed();
    assert!(matches!(r, Err(Error::TimedOut)), "{r:?}");
    assert!(
        took >= SHORT && took < SHORT + Duration::from_secs(2),
        "{took:?}"
    );

    // A zero timeout answers at once. On a FIFO that no reader of ours ever opened: the reader
    // above may live on for a moment in a child that another test thread is spawning (a fork
    // copies every descriptor; close-on-exec closes them only at the exec), and the kernel
    // rightly counts it as a reader.
    let fresh = Fifo::create(dir.join("never-read").unwrap()).unwrap();
    let r = FifoWriter::open_timeout(fresh.path(), Duration::ZERO);
    assert!(matches!(r, Err(Error::TimedOut)), "{r:?}");
}

/// Child role: open the other end of the FIFO at the path and check/produce the payload.
fn peer_role(which: &str) {
    let path = child_path();
    let payload = b"the peer arrived later";
    match which {
        "late-reader" => {
            let mut r = FifoReader::open_timeout(&path, CHILD_LIMIT).unwrap();
            let mut got = Vec::new();
            r.read_to_end(&mut got).unwrap();
            assert_eq!(fnv1a64(&got), fnv1a64(payload));
        }
        "late-writer" => {
            let mut w = FifoWriter::open_timeout(&path, CHILD_LIMIT).unwrap();
            w.write_all(payload).unwrap();
        }
        "late-blocking-reader" => {
            // A foreign-style reader: plain blocking open(2), as `cat fifo` would do.
            let mut f = std::fs::File::open(&path).unwrap();
            let mut got = Vec::new();
            f.read_to_end(&mut got).unwrap();
            assert_eq!(fnv1a64(&got), fnv1a64(payload));
        }
        other => panic!("unknown role {other}"),
    }
}

/// Starts `open` on this thread; a helper thread spawns the peer process only after the open
/// call has started, and the test checks that the open returned after the peer was spawned.
fn open_waits_for_late_peer<T>(
    path: &Path,
    peer: &str,
    test: &str,
    open: impl FnOnce() -> T,
) -> (T, Proc) {
    let (started_tx, started_rx) = mpsc::channel::<Instant>();
    let (spawned_tx, spawned_rx) = mpsc::channel::<(Instant, Proc)>();
    let path = path.to_owned();
    let test = test.to_owned();
    let peer = peer.to_owned();
    let helper = std::thread::spawn(move || {
        let started = started_rx.recv().unwrap();
        let at = Instant::now();
        assert!(at >= started);
        let p = Proc::spawn(child(&test, &peer).env(PATH_ENV, &path)).unwrap();
        spawned_tx.send((at, p)).unwrap();
    });
    let started = Instant::now();
    started_tx.send(started).unwrap();
    let end = open();
    let returned = Instant::now();
    let (spawned_at, proc) = spawned_rx.recv().unwrap();
    helper.join().unwrap();
    assert!(
        started <= spawned_at,
        "the peer was spawned before the open started"
    );
    assert!(
        returned > spawned_at,
        "the open returned before its peer existed"
    );
    (end, proc)
}

#[test]
fn blocking_open_completes_when_the_peer_arrives_later() {
    if let Some(r) = role() {
        return peer_role(&r);
    }
    let _wd = Watchdog::new("blocking_open_late_peer", Duration::from_secs(60));
    let dir = place();
    let fifo = Fifo::create(dir.join("late").unwrap()).unwrap();
    let me = test_path!(blocking_open_completes_when_the_peer_arrives_later);
    let payload = b"the peer arrived later";

    // Writer first (blocking open(2)), reader process later.
    assert!(matches!(
        FifoWriter::try_open(fifo.path()),
        Err(Error::NoReader)
    ));
    let (w, p) = open_waits_for_late_peer(fifo.path(), "late-reader", &me, || {
        FifoWriter::open(fifo.path()).unwrap()
    });
    (&w).write_all(payload).unwrap();
    drop(w);
    p.expect_success(CHILD_LIMIT);

    // Writer first with a timeout (inotify wake-up), reader process later.
    let (w, p) = open_waits_for_late_peer(fifo.path(), "late-reader", &me, || {
        FifoWriter::open_timeout(fifo.path(), CHILD_LIMIT).unwrap()
    });
    (&w).write_all(payload).unwrap();
    drop(w);
    p.expect_success(CHILD_LIMIT);

    // Writer with a timeout, and a reader that blocks inside open(2) (not announced by inotify).
    let (w, p) = open_waits_for_late_peer(fifo.path(), "late-blocking-reader", &me, || {
        FifoWriter::open_timeout(fifo.path(), CHILD_LIMIT).unwrap()
    });
    (&w).write_all(payload).unwrap();
    drop(w);
    p.expect_success(CHILD_LIMIT);

    // Reader first (waits for its first writer), writer process later.
    let (mut r, p) = open_waits_for_late_peer(fifo.path(), "late-writer", &me, || {
        FifoReader::open(fifo.path()).unwrap()
    });
    let mut got = Vec::new();
    r.read_to_end(&mut got).unwrap();
    assert_eq!(got, payload);
    p.expect_success(CHILD_LIMIT);

    // A reader that did not wait at all (try_open returns at once, before the writer process
    // exists) reads no false end-of-file: its read waits for the writer's data.
    let mut r = FifoReader::try_open(fifo.path()).unwrap();
    let p = Proc::spawn(child(&me, "late-writer").env(PATH_ENV, fifo.path())).unwrap();
    let mut got = Vec::new();
    r.read_to_end(&mut got).unwrap();
    assert_eq!(got, payload);
    p.expect_success(CHILD_LIMIT);
}

/// Child role: opens the FIFO for writing, writes nothing, and waits (bounded) until the reader
/// has gone (`POLLERR` on the write end), then exits.
fn silent_writer_role() {
    let w = FifoWriter::open_timeout(child_path(), CHILD_LIMIT).unwrap();
    let mut fds = [rustix::event::PollFd::new(
        &w,
        rustix::event::PollFlags::empty(),
    )];
    let limit = rustix::event::Timespec {
        tv_sec: CHILD_LIMIT.as_secs() as i64,
        tv_nsec: 0,
    };
    loop {
        match rustix::event::poll(&mut fds, Some(&limit)) {
            Ok(0) => panic!("the reader never left"),
            Ok(_) => break,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => panic!("poll: {e}"),
        }
    }
    assert!(fds[0].revents().contains(rustix::event::PollFlags::ERR));
}

#[test]
fn reader_open_completes_when_a_writer_arrives_without_writing() {
    if role().as_deref() == Some("silent-writer") {
        return silent_writer_role();
    }
    let _wd = Watchdog::new("reader_open_silent_writer", Duration::from_secs(60));
    let dir = place();
    let fifo = Fifo::create(dir.join("silent").unwrap()).unwrap();
    let me = test_path!(reader_open_completes_when_a_writer_arrives_without_writing);
    // Like open(2) with O_RDONLY, the reader's open waits for a writer to open the FIFO, not for
    // its first byte: a writer that opens and then waits for something else (say, a request
    // on another FIFO) must not deadlock with a reader stuck in its open.
    type Open = fn(&Path) -> Result<FifoReader, Error>;
    let opens: [(&str, Open); 2] = [
        ("open_timeout", |p| FifoReader::open_timeout(p, CHILD_LIMIT)),
        ("open", |p| FifoReader::open(p)),
    ];
    for (what, open) in opens {
        let t = Instant::now();
        let (r, p) =
            open_waits_for_late_peer(fifo.path(), "silent-writer", &me, || open(fifo.path()));
        let r = r.unwrap_or_else(|e| panic!("{what}: {e:?} after {:?}", t.elapsed()));
        // The writer is there and has sent nothing: no data, and no (false) end-of-file.
        r.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(
            (&r).read(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock,
            "{what}"
        );
        drop(r);
        p.expect_success(CHILD_LIMIT);
    }
}

#[test]
fn a_reader_before_any_writer_sees_no_false_eof() {
    let _wd = Watchdog::new("no_false_eof", Duration::from_secs(20));
    let dir = place();
    let fifo = Fifo::create(dir.join("early").unwrap()).unwrap();
    let r = FifoReader::try_open(fifo.path()).unwrap();
    r.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 16];
    // Raw read(2) returns 0 here; the reader says "nothing yet" instead.
    let e = (&r).read(&mut buf).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    let w = FifoWriter::try_open(fifo.path()).unwrap();
    (&w).write_all(b"hi").unwrap();
    assert_eq!((&r).read(&mut buf).unwrap(), 2);
    drop(w);
    // Now a writer has come and gone: that is a real end-of-file. (Read in blocking mode: a
    // child that another test thread is spawning may hold a copy of the writer until its
    // exec.)
    r.set_nonblocking(false).unwrap();
    assert_eq!((&r).read(&mut buf).unwrap(), 0);
}

#[test]
fn keep_alive_reader_sees_no_eof_when_the_last_writer_leaves() {
    let _wd = Watchdog::new("keep_alive", Duration::from_secs(20));
    let dir = place();
    let fifo = Fifo::create(dir.join("server").unwrap()).unwrap();
    // Opening a keep-alive reader never waits: it is its own writer.
    let server = FifoReader::options()
        .keep_alive(KeepAlive::On)
        .open_timeout(fifo.path(), Duration::ZERO)
        .unwrap();
    assert!(server.is_keep_alive());
    let mut records = RecordReader::new(server);
    for client in 0..3u8 {
        let w = FifoWriter::try_open(fifo.path()).unwrap();
        w.write_record(&[client; 10]).unwrap();
        drop(w);
        assert_eq!(records.recv().unwrap(), Some(&[client; 10][..]));
        // The client left; the server sees "nothing yet", not end-of-file.
        assert!(matches!(records.try_recv(), Err(Error::WouldBlock)));
        assert!(matches!(
            records.recv_timeout(Duration::from_millis(20)),
            Err(Error::TimedOut)
        ));
    }

    // Without keep-alive, the same sequence ends with end-of-file.
    drop(records);
    let plain = FifoReader::try_open(fifo.path()).unwrap();
    let mut records = RecordReader::new(plain);
    let w = FifoWriter::try_open(fifo.path()).unwrap();
    w.write_record(b"last").unwrap();
    drop(w);
    assert_eq!(records.recv().unwrap(), Some(&b"last"[..]));
    assert_eq!(records.recv().unwrap(), None);
}

#[test]
fn nonblocking_toggle_works_on_both_ends() {
    let dir = place();
    let fifo = Fifo::create(dir.join("nb").unwrap()).unwrap();
    let r = FifoReader::try_open(fifo.path()).unwrap();
    let w = FifoWriter::try_open(fifo.path()).unwrap();
    r.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(
        (&r).read(&mut buf).unwrap_err().kind(),
        io::ErrorKind::WouldBlock
    );
    // Fill the writer in non-blocking mode until it would block.
    w.set_nonblocking(true).unwrap();
    let chunk = [7u8; 4096];
    let mut total = 0usize;
    loop {
        match (&w).write(&chunk) {
            Ok(n) => total += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(total >= 4096);
    assert!(matches!(
        w.try_write_record(b"full"),
        Err(Error::WouldBlock)
    ));
    w.set_nonblocking(false).unwrap();
    assert!(matches!(
        w.write_record_timeout(b"full", Duration::from_millis(20)),
        Err(Error::TimedOut)
    ));
    r.set_nonblocking(false).unwrap();
    assert!(r.wait_readable(Duration::ZERO).unwrap());
}

fn assert_refused(path: &Path, expect: FileKind) {
    let check = |r: Result<(), Error>, what: &str| match r {
        Err(Error::NotAFifo { found, .. }) => assert_eq!(found, expect, "{what}"),
        other => panic!(
            "{what} on {}: expected NotAFifo, got {other:?}",
            path.display()
        ),
    };
    check(FifoWriter::try_open(path).map(drop), "try_open writer");
    check(
        FifoWriter::open_timeout(path, SHORT).map(drop),
        "open_timeout writer",
    );
    check(FifoWriter::open(path).map(drop), "open writer");
    check(FifoReader::try_open(path).map(drop), "try_open reader");
    check(
        FifoReader::open_timeout(path, SHORT).map(drop),
        "open_timeout reader",
    );
    check(
        FifoReader::options()
            .keep_alive(KeepAlive::On)
            .owner_check(OwnerCheck::AnyUid)
            .open(path)
            .map(drop),
        "keep-alive reader",
    );
}

#[test]
fn a_file_symlink_or_directory_at_the_path_is_refused_and_unchanged() {
    let _wd = Watchdog::new("refused", Duration::from_secs(20));
    let dir = place();
    let file = dir.join("file").unwrap();
    std::fs::write(&file, b"precious").unwrap();
    let before = std::fs::metadata(&file).unwrap();
    let link = dir.join("link").unwrap();
    std::os::unix::fs::symlink(&file, &link).unwrap();
    let sub = dir.join("sub").unwrap();
    std::fs::create_dir(&sub).unwrap();

    assert_refused(&file, FileKind::Regular);
    assert_refused(&link, FileKind::Symlink);
    assert_refused(&sub, FileKind::Directory);
    assert_refused(Path::new("/dev/null"), FileKind::CharDevice);

    // A symlink to a FIFO is refused too: symlinks are never followed.
    let fifo = Fifo::create(dir.join("real").unwrap()).unwrap();
    let to_fifo = dir.join("to-fifo").unwrap();
    std::os::unix::fs::symlink(fifo.path(), &to_fifo).unwrap();
    assert_refused(&to_fifo, FileKind::Symlink);

    let after = std::fs::metadata(&file).unwrap();
    assert_eq!(std::fs::read(&file).unwrap(), b"precious");
    assert_eq!(
        (after.len(), after.mtime(), after.mtime_nsec(), after.ino()),
        (
            before.len(),
            before.mtime(),
            before.mtime_nsec(),
            before.ino()
        )
    );
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(matches!(
        FifoWriter::try_open(dir.join("missing").unwrap()),
        Err(Error::NotFound { .. })
    ));
}

/// Child role: as uid 65534, checks that root's FIFO is refused by default.
fn nobody_role() {
    let path = child_path();
    // The raw syscall changes this thread's credentials only; this is the only thread of the
    // child that touches the FIFO, and the process exits right after.
    rustix::thread::set_thread_uid(rustix::process::Uid::from_raw(65534)).unwrap();
    assert_eq!(rustix::process::geteuid().as_raw(), 65534);
    match FifoWriter::try_open(&path) {
        Err(Error::WrongOwner {
            expected, found, ..
        }) => {
            assert_eq!((expected, found), (65534, 0));
        }
        other => panic!("expected WrongOwner, got {other:?}"),
    }
}

#[test]
fn another_users_fifo_is_refused_by_default() {
    if role().as_deref() == Some("nobody") {
        return nobody_role();
    }
    let dir = place();
    let path = dir.join("theirs").unwrap();
    let fifo = Fifo::options().mode(0o666).create(&path).unwrap();
    rustix::fs::chown(&path, Some(rustix::process::Uid::from_raw(65534)), None).unwrap();
    let r = FifoReader::try_open(&path);
    assert!(
        matches!(
            r,
            Err(Error::WrongOwner {
                expected: 0,
                found: 65534,
                ..
            })
        ),
        "{r:?}"
    );
    assert!(matches!(
        FifoWriter::open_timeout(&path, SHORT),
        Err(Error::WrongOwner { .. })
    ));
    assert!(matches!(
        ipc_fifo::unlink(&path),
        Err(Error::WrongOwner { .. })
    ));
    // Opting out accepts it.
    let r = FifoReader::options()
        .owner_check(OwnerCheck::AnyUid)
        .try_open(&path)
        .unwrap();
    let w = FifoWriter::options()
        .owner_check(OwnerCheck::AnyUid)
        .try_open(&path)
        .unwrap();
    w.write_record(b"ok").unwrap();
    drop(w);
    assert_eq!(RecordReader::new(r).recv().unwrap(), Some(&b"ok"[..]));
    // And the other way round: a non-root process refuses root's FIFO.
    let _wd = Watchdog::new("nobody", Duration::from_secs(30));
    let mine = Fifo::options()
        .mode(0o666)
        .create(dir.join("roots").unwrap())
        .unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    )
    .unwrap();
    Proc::spawn(
        child(
            &test_path!(another_users_fifo_is_refused_by_default),
            "nobody",
        )
        .env(PATH_ENV, mine.path()),
    )
    .unwrap()
    .expect_success(CHILD_LIMIT);
    drop(fifo);
}

#[test]
fn ends_convert_into_owned_fd_and_stdio() {
    use std::os::fd::{AsFd, AsRawFd, OwnedFd};
    let dir = place();
    let fifo = Fifo::create(dir.join("conv").unwrap()).unwrap();
    let r = FifoReader::try_open(fifo.path()).unwrap();
    let w = FifoWriter::try_open(fifo.path()).unwrap();
    assert_eq!(r.as_fd().as_raw_fd(), r.as_raw_fd());
    let wfd = OwnedFd::from(w);
    let w = FifoWriter::try_from(wfd).unwrap();
    let rfd = OwnedFd::from(r);
    assert!(matches!(
        FifoWriter::try_from(rfd.try_clone().unwrap()),
        Err(Error::WrongEnd { needed: "writing" })
    ));
    let r = FifoReader::try_from(rfd).unwrap();
    let file = std::fs::File::open("/dev/null").unwrap();
    assert!(matches!(
        FifoReader::try_from(OwnedFd::from(file)),
        Err(Error::NotAFifoDescriptor {
            found: FileKind::CharDevice
        })
    ));
    // Hand the write end to a child as its stdout.
    let mut out = std::process::Command::new("echo")
        .arg("from a child")
        .stdout(std::process::Stdio::from(w))
        .spawn()
        .unwrap();
    assert!(out.wait().unwrap().success());
    let mut got = String::new();
    (&r).read_to_string(&mut got).unwrap();
    assert_eq!(got, "from a child\n");
}

/// Child role: an open that starts before the FIFO and its directory exist. The FIFO, then
/// its peer, are made from a hook that runs whenever the open is about to wait in `poll`, so
/// it is certain that the open was waiting when they appeared (no timing involved).
fn appear_role(end: &str) {
    use std::sync::{Arc, Mutex};
    let place = child_path();
    let path = place.join("later").join("deeper").join("fifo");
    // What the hook made: the owner, and the peer end (kept open).
    type Made = (Option<Fifo>, Option<FifoReader>, Option<FifoWriter>);
    let made: Arc<Mutex<Made>> = Arc::default();
    let (p, m, which) = (path.clone(), Arc::clone(&made), end.to_owned());
    let hooked = crate::intercept::on_poll(move || {
        let mut m = m.lock().unwrap();
        if m.0.is_none() {
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            m.0 = Some(Fifo::create(&p).unwrap());
        } else if which == "writer" && m.1.is_none() {
            m.1 = Some(FifoReader::try_open(&p).unwrap());
        } else if which == "reader" && m.2.is_none() {
            let w = FifoWriter::try_open(&p).unwrap();
            w.write_record(b"hello").unwrap();
            m.2 = Some(w);
        }
    });
    if !hooked {
        eprintln!("skipped: no seccomp user notification here");
        return;
    }
    match end {
        "writer" => {
            let w = FifoWriter::open_timeout(&path, CHILD_LIMIT).unwrap();
            w.write_record(b"hello").unwrap();
            let reader = made
                .lock()
                .unwrap()
                .1
                .take()
                .expect("the hook made the reader");
            let mut records = RecordReader::new(reader);
            assert_eq!(records.try_recv().unwrap(), Some(&b"hello"[..]));
        }
        _ => {
            let r = FifoReader::open_timeout(&path, CHILD_LIMIT).unwrap();
            assert!(made.lock().unwrap().2.is_some(), "the hook made the writer");
            let mut records = RecordReader::new(r);
            assert_eq!(records.try_recv().unwrap(), Some(&b"hello"[..]));
        }
    }
}

#[test]
fn opens_wait_for_the_fifo_and_its_directory_to_appear() {
    match role().as_deref() {
        Some("appear-writer") => return appear_role("writer"),
        Some("appear-reader") => return appear_role("reader"),
        _ => {}
    }
    let _wd = Watchdog::new("appear", Duration::from_secs(60));
    let me = test_path!(opens_wait_for_the_fifo_and_its_directory_to_appear);
    for r in ["appear-writer", "appear-reader"] {
        let dir = place();
        Proc::spawn(child(&me, r).env(PATH_ENV, dir.path()))
            .unwrap()
            .expect_success(CHILD_LIMIT);
    }
    // When nothing appears: NotFound at the deadline, saying where and what is missing.
    let dir = place();
    let path = dir.join("never").unwrap().join("fifo");
    for r in [
        FifoWriter::open_timeout(&path, SHORT).map(drop),
        FifoReader::open_timeout(&path, SHORT).map(drop),
        FifoReader::options()
            .keep_alive(KeepAlive::On)
            .open_timeout(&path, SHORT)
            .map(drop),
    ] {
        match r {
            Err(Error::NotFound {
                path: p,
                dir_exists: false,
            }) => assert_eq!(p, path),
            other => panic!("{other:?}"),
        }
    }
    // try_open does not wait.
    assert!(matches!(
        FifoWriter::try_open(&path),
        Err(Error::NotFound { .. })
    ));
}
