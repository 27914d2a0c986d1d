//! One process, both ends: the API's contracts (capacity, readiness, timeouts, conversions).

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use ipc_pipe::{Error, PIPE_BUF, PIPE_MAX_SIZE_FILE, PipeReader, PipeWriter, pipe};

#[test]
fn ends_are_close_on_exec_from_birth() {
    let (r, w) = pipe().unwrap();
    for fd in [r.as_raw_fd(), w.as_raw_fd()] {
        let flags = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap();
        let flags = flags
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .unwrap()
            .trim()
            .to_owned();
        let flags = u32::from_str_radix(&flags, 8).unwrap();
        assert_ne!(flags & 0o2000000, 0, "O_CLOEXEC missing on fd {fd}");
    }
}

#[test]
fn available_counts_unread_bytes() {
    let (mut r, mut w) = pipe().unwrap();
    assert_eq!(r.available().unwrap(), 0);
    w.write_all(&[1; 1000]).unwrap();
    assert_eq!(r.available().unwrap(), 1000);
    assert_eq!(w.available().unwrap(), 1000);
    let mut buf = [0; 400];
    r.read_exact(&mut buf).unwrap();
    assert_eq!(r.available().unwrap(), 600);
}

#[test]
fn capacity_grows_to_the_maximum_and_refuses_beyond_it() {
    let (r, w) = pipe().unwrap();
    let max = ipc_pipe::pipe_max_size().unwrap();
    assert_eq!(w.capacity().unwrap(), 65536);
    assert_eq!(w.set_capacity_max().unwrap() as u64, max);
    assert_eq!(r.capacity().unwrap() as u64, max);
    match w.set_capacity(max as usize + 1) {
        Err(Error::LimitExceeded {
            what,
            requested,
            limit,
        }) => {
            assert_eq!(what, PIPE_MAX_SIZE_FILE);
            assert_eq!(requested, max + 1);
            assert_eq!(limit, max);
        }
        other => panic!("expected LimitExceeded, got {other:?}"),
    }
    let err = w.set_capacity(usize::MAX).unwrap_err().to_string();
    assert!(err.contains("pipe-max-size"), "{err}");
    // Rounded up to a power-of-two number of pages.
    assert_eq!(w.set_capacity(5000).unwrap(), 8192);
}

#[test]
fn shrinking_below_the_contents_is_an_error_not_a_loss() {
    let (r, mut w) = pipe().unwrap();
    w.write_all(&[9; 20_000]).unwrap();
    assert!(w.set_capacity(4096).is_err());
    assert_eq!(r.available().unwrap(), 20_000);
}

#[test]
fn try_forms_do_not_block() {
    let (r, w) = pipe().unwrap();
    let mut buf = [0; 16];
    assert!(matches!(r.try_read(&mut buf), Err(Error::WouldBlock)));
    w.set_capacity(4096).unwrap();
    assert_eq!(w.try_write(&[0; 8192]).unwrap(), 4096);
    assert!(matches!(w.try_write(&[0; 1]), Err(Error::WouldBlock)));
    // Non-blocking and full: an atomic record is refused whole.
    w.set_nonblocking(true).unwrap();
    assert!(w.is_nonblocking().unwrap());
    assert!(matches!(w.write_atomic(b"x"), Err(Error::WouldBlock)));
    assert_eq!(r.try_read(&mut buf).unwrap(), 16);
    drop(w);
    let mut rest = Vec::new();
    (&r).read_to_end(&mut rest).unwrap();
    assert_eq!(rest.len(), 4096 - 16);
    assert_eq!(
        r.try_read(&mut buf).unwrap(),
        0,
        "end of file is ready, not WouldBlock"
    );
}

#[test]
fn read_timeout_waits_about_as_long_as_asked() {
    let (r, _w) = pipe().unwrap();
    let start = Instant::now();
    let mut buf = [0; 8];
    assert!(matches!(
        r.read_timeout(&mut buf, Duration::from_millis(50)),
        Err(Error::TimedOut { .. })
    ));
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(50) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[test]
fn timeouts_saturate_instead_of_panicking() {
    let (r, w) = pipe().unwrap();
    w.write_atomic(b"now").unwrap();
    let mut buf = [0; 8];
    assert_eq!(r.read_timeout(&mut buf, Duration::MAX).unwrap(), 3);
    w.write_all_timeout(&[1; 100_000][..60_000], Duration::MAX)
        .unwrap();
    assert_eq!(r.available().unwrap(), 60_000);
}

#[test]
fn write_all_timeout_says_how_much_it_wrote_so_the_rest_can_follow() {
    let (r, w) = pipe().unwrap();
    let data = crate::payload(11, 300_000);
    // Nobody reads: the pipe fills, then time runs out. `written` is exactly what went in.
    let written = match w.write_all_timeout(&data, Duration::from_millis(30)) {
        Err(Error::TimedOut { written }) => written,
        other => panic!("expected TimedOut, got {other:?}"),
    };
    assert_eq!(written, r.available().unwrap());
    assert!(written < data.len());
    // Resume from there while a reader drains the pipe: every byte arrives once, in order.
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        (&r).read_to_end(&mut got).unwrap();
        got
    });
    w.write_all_timeout(&data[written..], Duration::from_secs(30))
        .unwrap();
    drop(w);
    let got = reader.join().unwrap();
    assert!(got == data, "the resumed stream is not the data");
    // Nothing to write is done at once, and a timeout before any byte says 0.
    let (_r, w) = pipe().unwrap();
    w.write_all_timeout(&[], Duration::ZERO).unwrap();
    w.write_all_timeout(&vec![0; 65536], Duration::from_secs(5))
        .unwrap();
    assert!(matches!(
        w.write_all_timeout(b"more", Duration::from_millis(1)),
        Err(Error::TimedOut { written: 0 })
    ));
}

#[test]
fn atomic_records_larger_than_pipe_buf_are_refused() {
    let (r, w) = pipe().unwrap();
    w.write_atomic(&[1; PIPE_BUF]).unwrap();
    match w.write_atomic(&[1; PIPE_BUF + 1]) {
        Err(Error::MessageTooLarge { len, max }) => {
            assert_eq!((len, max), (PIPE_BUF as u64 + 1, PIPE_BUF as u64));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        r.available().unwrap(),
        PIPE_BUF,
        "nothing of the refused record was written"
    );
}

#[test]
fn conversions_keep_the_descriptor() {
    let (r, w) = pipe().unwrap();
    let (rfd, wfd) = (r.as_raw_fd(), w.as_raw_fd());
    let r = PipeReader::from(OwnedFd::from(r));
    let w = PipeWriter::from(OwnedFd::from(w));
    assert_eq!((r.as_raw_fd(), w.as_raw_fd()), (rfd, wfd));
    let mut w = w;
    w.set_sigpipe_policy(ipc_pipe::SigpipePolicy::Suppress);
    let w2 = w.try_clone().unwrap();
    assert_ne!(w2.as_raw_fd(), wfd);
    assert_eq!(w2.sigpipe_policy(), ipc_pipe::SigpipePolicy::Suppress);
    drop(w);
    (&w2).write_all(b"still open").unwrap();
    drop(w2);
    let mut s = String::new();
    (&r).read_to_string(&mut s).unwrap();
    assert_eq!(s, "still open");
    let _: std::process::Stdio = r.into();
}

#[test]
fn pipe_ends_are_debug_send_and_sync() {
    fn check<T: Send + Sync + std::fmt::Debug>() {}
    check::<PipeReader>();
    check::<PipeWriter>();
    check::<ipc_pipe::Duplex>();
    check::<Error>();
}

#[test]
fn copy_between_two_files_goes_through_a_pipe() {
    let dir = std::env::temp_dir();
    let src = dir.join(ipc_testkit::unique("copy-src"));
    let dst = dir.join(ipc_testkit::unique("copy-dst"));
    let data = crate::payload(7, 3 << 20 | 123);
    std::fs::write(&src, &data).unwrap();
    let from = std::fs::File::open(&src).unwrap();
    let to = std::fs::File::create(&dst).unwrap();
    let n = ipc_pipe::copy(&from, &to, None).unwrap();
    let got = std::fs::read(&dst).unwrap();
    let _ = std::fs::remove_file(&src);
    let _ = std::fs::remove_file(&dst);
    assert_eq!(n, data.len() as u64);
    assert_eq!(ipc_testkit::fnv1a64(&got), ipc_testkit::fnv1a64(&data));
}

#[test]
fn copy_falls_back_when_the_kernel_refuses_to_splice() {
    // splice refuses files opened with O_APPEND (EINVAL): copy must still deliver every byte.
    let dir = std::env::temp_dir();
    let dst = dir.join(ipc_testkit::unique("copy-app"));
    let to = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&dst)
        .unwrap();
    let (r, mut w) = pipe().unwrap();
    let data = crate::payload(8, 50_000);
    w.write_all(&data).unwrap();
    drop(w);
    let n = ipc_pipe::copy(&r, &to, Some(50_000)).unwrap();
    let got = std::fs::read(&dst).unwrap();
    let _ = std::fs::remove_file(&dst);
    assert_eq!(n, 50_000);
    assert_eq!(got, data);
}

#[test]
fn the_per_user_page_limit_is_a_typed_error_naming_it() {
    use ipc_pipe::PIPE_USER_PAGES_SOFT_FILE;
    if ipc_testkit::role().is_some() {
        // Child: become `nobody` (this thread's credentials; the pipes are made by this thread)
        // so that the limit applies, then grow pipes until the user's budget is spent.
        let soft: u64 = std::fs::read_to_string(PIPE_USER_PAGES_SOFT_FILE)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        if soft == 0 {
            eprintln!("no per-user soft limit on this system: nothing to test");
            return;
        }
        rustix::thread::set_thread_uid(rustix::process::Uid::from_raw(65534)).unwrap();
        let per_pipe = 1 << 20;
        let most = soft as usize * 4096 / per_pipe + 16;
        let mut pipes = Vec::new();
        for _ in 0..most {
            let (r, w) = pipe().unwrap();
            match w.set_capacity(per_pipe) {
                Ok(_) => pipes.push((r, w)),
                Err(Error::LimitExceeded {
                    what,
                    requested,
                    limit,
                }) => {
                    assert_eq!(what, PIPE_USER_PAGES_SOFT_FILE);
                    assert_eq!(requested, per_pipe as u64);
                    assert_eq!(limit, soft * 4096);
                    return;
                }
                Err(e) => panic!("expected LimitExceeded, got {e:?}"),
            }
        }
        panic!("{} pipes of 1 MiB and still no limit", pipes.len());
    }
    let _wd = ipc_testkit::Watchdog::new("per-user limit", crate::LIMIT);
    let cmd = ipc_testkit::child(
        &ipc_testkit::test_path!(the_per_user_page_limit_is_a_typed_error_naming_it),
        "nobody",
    );
    crate::spawn(cmd).expect_success(crate::LIMIT);
}

#[test]
fn pipe_ends_never_pose_as_standard_streams() {
    if ipc_testkit::role().is_some() {
        // A process started with standard input closed: the lowest free number is 0. (std
        // reopens a closed 0 on /dev/null before main, so close it here; nothing reads it.)
        #[allow(unsafe_code)]
        // SAFETY: descriptor 0 is std's stdin, which this child never uses.
        let closed = unsafe { libc::close(0) };
        assert_eq!(closed, 0);
        let (r, w) = pipe().unwrap();
        let r2 = r.try_clone().unwrap();
        let w2 = w.try_clone().unwrap();
        for fd in [
            &r.as_raw_fd(),
            &w.as_raw_fd(),
            &r2.as_raw_fd(),
            &w2.as_raw_fd(),
        ] {
            assert!(*fd > 2, "a pipe end at {fd}, a standard stream's number");
        }
        // And 0 is still free: the next descriptor anyone opens takes it, not ours.
        let next = std::fs::File::open("/dev/null").unwrap();
        assert_eq!(next.as_raw_fd(), 0);
        return;
    }
    let _wd = ipc_testkit::Watchdog::new("no stdio numbers", crate::LIMIT);
    let cmd = ipc_testkit::child(
        &ipc_testkit::test_path!(pipe_ends_never_pose_as_standard_streams),
        "closed-stdin",
    );
    crate::spawn(cmd).expect_success(crate::LIMIT);
}
