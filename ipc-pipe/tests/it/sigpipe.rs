//! Writing when the reader is gone: an error, never a dead writer — whatever SIGPIPE's
//! disposition, given the right policy. Dispositions are changed in child processes only.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::process::ExitStatusExt;

use ipc_pipe::sigpipe::{self, Disposition, SigpipePolicy};
use ipc_pipe::{ChildFds, Error, FramedWriter, PipeWriter, pipe};
use ipc_testkit::{Proc, Watchdog, child, role, test_path};

use crate::LIMIT;

/// Child: writes "hello", then keeps writing until the parent (the only reader) has gone.
/// Returns the error the write gave.
fn write_until_the_reader_is_gone(w: &PipeWriter) -> std::io::Error {
    w.write_atomic(b"hello").unwrap();
    loop {
        if let Err(e) = (&*w).write(&[0; 4096]) {
            return e;
        }
    }
}

/// Parent: runs the child `role` with the write end at fd 3, reads "hello", closes the read end
/// and returns how the child ended.
fn run(test: &str, role: &str) -> std::process::ExitStatus {
    let _wd = Watchdog::new(role, LIMIT);
    let (mut r, w) = pipe().unwrap();
    let mut cmd = child(test, role);
    cmd.stdout(std::process::Stdio::null());
    ChildFds::new().fd_at(3, w).apply(&mut cmd).unwrap();
    let mut p = Proc::spawn(&mut cmd).unwrap();
    drop(cmd);
    let mut hello = [0; 5];
    r.read_exact(&mut hello).unwrap();
    assert_eq!(&hello, b"hello");
    drop(r);
    p.wait_timeout(LIMIT).unwrap()
}

#[test]
fn a_rust_writer_gets_broken_pipe_when_the_reader_died() {
    if role().is_some() {
        assert_eq!(sigpipe::disposition().unwrap(), Disposition::Ignore);
        let w = crate::inherited_writer(3);
        let e = write_until_the_reader_is_gone(&w);
        assert_eq!(e.kind(), ErrorKind::BrokenPipe);
        assert!(matches!(w.write_atomic(b"x"), Err(Error::NoReader)));
        let err = FramedWriter::new(&w).write_frame(b"late").unwrap_err();
        assert!(matches!(err, Error::NoReader), "{err:?}");
        return;
    }
    let status = run(
        &test_path!(a_rust_writer_gets_broken_pipe_when_the_reader_died),
        "ignored",
    );
    assert!(status.success(), "{status}");
}

#[test]
fn with_sigpipe_at_default_the_suppress_policy_still_gives_an_error() {
    if role().is_some() {
        // What a C host looks like: SIGPIPE at its default action (terminate).
        assert_eq!(sigpipe::restore_default().unwrap(), Disposition::Ignore);
        assert_eq!(sigpipe::disposition().unwrap(), Disposition::Default);
        let mut w = crate::inherited_writer(3);
        w.set_sigpipe_policy(SigpipePolicy::Suppress);
        let e = write_until_the_reader_is_gone(&w);
        assert_eq!(e.kind(), ErrorKind::BrokenPipe);
        for _ in 0..3 {
            assert!(matches!(w.write_atomic(b"x"), Err(Error::NoReader)));
        }
        // Every other path that writes into this end honours its policy too.
        let err = FramedWriter::new(&w)
            .write_frame(&[1; 100_000])
            .unwrap_err();
        assert!(matches!(err, Error::NoReader), "framed: {err:?}");
        let err = w
            .write_all_timeout(&[2; 10_000], std::time::Duration::from_secs(5))
            .unwrap_err();
        assert!(matches!(err, Error::NoReader), "write_all_timeout: {err:?}");
        let mut z = ipc_pipe::ZeroCopyWriter::new(&w).unwrap();
        let err = z.send(&[3; 4096]).unwrap_err();
        assert!(matches!(err, Error::NoReader), "vmsplice: {err:?}");
        drop(z);
        let (src_r, mut src_w) = pipe().unwrap();
        src_w.write_all(b"teed").unwrap();
        let err = ipc_pipe::tee(&src_r, &w, 4).unwrap_err();
        assert!(matches!(err, Error::NoReader), "tee: {err:?}");
        // splice and copy take any descriptor: the closure form covers them.
        let spliced = sigpipe::suppressed(|| ipc_pipe::splice(&src_r, &w, 4)).unwrap();
        assert!(
            matches!(spliced, Err(Error::NoReader)),
            "splice: {spliced:?}"
        );
        let copied = sigpipe::suppressed(|| ipc_pipe::copy(&src_r, &w, Some(4))).unwrap();
        assert!(matches!(copied, Err(Error::NoReader)), "copy: {copied:?}");
        assert_eq!(
            src_r.available().unwrap(),
            4,
            "nothing was taken from the source"
        );
        // No SIGPIPE is left pending to kill us later: unblock-and-live is the proof (the
        // mask was restored by each write, so a pending SIGPIPE would have ended us here).
        std::thread::yield_now();
        return;
    }
    let status = run(
        &test_path!(with_sigpipe_at_default_the_suppress_policy_still_gives_an_error),
        "default-suppress",
    );
    assert!(status.success(), "{status}");
}

#[test]
fn with_sigpipe_at_default_a_plain_write_kills_the_writer() {
    if role().is_some() {
        sigpipe::restore_default().unwrap();
        let w = crate::inherited_writer(3);
        let _ = write_until_the_reader_is_gone(&w);
        // Not reached: SIGPIPE terminated the process. Exit with a distinct status otherwise.
        std::process::exit(42);
    }
    let status = run(
        &test_path!(with_sigpipe_at_default_a_plain_write_kills_the_writer),
        "default-inherit",
    );
    assert_eq!(status.signal(), Some(libc_sigpipe()), "{status}");
}

#[test]
fn ignore_makes_a_default_host_safe() {
    if role().is_some() {
        sigpipe::restore_default().unwrap();
        assert_eq!(sigpipe::ignore().unwrap(), Disposition::Default);
        let w = crate::inherited_writer(3);
        assert_eq!(
            write_until_the_reader_is_gone(&w).kind(),
            ErrorKind::BrokenPipe
        );
        return;
    }
    let status = run(&test_path!(ignore_makes_a_default_host_safe), "ignore");
    assert!(status.success(), "{status}");
}

/// SIGPIPE's number on Linux.
fn libc_sigpipe() -> i32 {
    13
}
