//! Writing when the reader is gone: an error, never a dead writer — whatever SIGPIPE's
//! disposition, given the right policy. Dispositions and masks are changed in child processes
//! only.
// Signal masks and the pending set are libc calls: this is a test, not the library.
#![allow(unsafe_code)]

use std::io::{ErrorKind, IoSlice, Read, Write};
use std::mem::MaybeUninit;
use std::os::unix::process::ExitStatusExt;

use ipc_pipe::sigpipe::{self, Disposition, SigpipePolicy};
use ipc_pipe::{ChildFds, Error, FramedWriter, PIPE_BUF, PipeWriter, ZeroCopyWriter, pipe};
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

/// How much the reader takes before it closes in the middle of a transfer: two pipefuls, so the
/// writer has certainly started (and, for a single call of `BIG` bytes, not finished) its call.
const TAKEN: usize = 128 * 1024;
/// What each writer tries to move in its call(s): far more than `TAKEN` plus a pipeful.
const BIG: usize = 1 << 20;
/// The largest frame of the framed roles.
const MAX_FRAME: u32 = 2 << 20;

/// Byte `i` of the stream every mid-transfer writer sends: a 4096-byte block, repeated, so that
/// records, pieces and tee'd copies of one block all continue the same stream.
fn stream(len: usize) -> Vec<u8> {
    let block = crate::payload(0x5160, PIPE_BUF);
    block.iter().copied().cycle().take(len).collect()
}

/// The ways to write into a pipe, each run in its own child whose SIGPIPE is at its default
/// action (a C host), with the reader closing while the child is in the middle of it.
const PATHS: [&str; 14] = [
    "write",
    "write_vectored",
    "write_all",
    "write_timeout",
    "write_all_timeout",
    "write_atomic",
    "write_frame",
    "write_frame_timeout",
    "zero_copy",
    "vmsplice",
    "tee",
    "splice",
    "copy",
    "suppressed_write",
];

/// Child: plays `path` into the write end at fd 3 and checks the outcome; returns only if the
/// process survived (a SIGPIPE left pending would have killed it when the mask was restored).
fn mid_transfer_child(path: &str) {
    assert_eq!(sigpipe::restore_default().unwrap(), Disposition::Ignore);
    let mut w = crate::inherited_writer(3);
    w.set_sigpipe_policy(SigpipePolicy::Suppress);
    let data = stream(BIG);
    let broken = |e: &std::io::Error| e.kind() == ErrorKind::BrokenPipe;
    let no_reader = |r: ipc_pipe::Result<()>| match r {
        Err(Error::NoReader) => {}
        other => panic!("{path}: expected NoReader, got {other:?}"),
    };
    match path {
        // One call of BIG bytes, cut short when the reader goes: a short count (and, from
        // Linux, a SIGPIPE), then EPIPE.
        "write" | "write_vectored" | "suppressed_write" => {
            let n = match path {
                "write" => (&w).write(&data),
                "write_vectored" => {
                    let (a, b) = data.split_at(BIG / 2);
                    (&w).write_vectored(&[IoSlice::new(a), IoSlice::new(b)])
                }
                _ => {
                    // An Inherit writer inside `suppressed`: the closure form.
                    let mut plain = w.try_clone().unwrap();
                    plain.set_sigpipe_policy(SigpipePolicy::Inherit);
                    sigpipe::suppressed(|| (&plain).write(&data)).unwrap()
                }
            }
            .unwrap();
            assert!((TAKEN..BIG).contains(&n), "{path}: wrote {n} bytes");
            let e = (&w).write(&data[n..]).unwrap_err();
            assert!(broken(&e), "{path} after the short write: {e}");
        }
        "write_all" => {
            let e = (&w).write_all(&data).unwrap_err();
            assert!(broken(&e), "{e}");
        }
        "write_timeout" => loop {
            match w.write_timeout(&data, LIMIT) {
                Ok(_) => {}
                Err(Error::NoReader) => break,
                Err(e) => panic!("write_timeout: {e:?}"),
            }
        },
        "write_all_timeout" => no_reader(w.write_all_timeout(&data, LIMIT)),
        "write_atomic" => no_reader(
            data.chunks(PIPE_BUF)
                .cycle()
                .try_for_each(|record| w.write_atomic(record)),
        ),
        // A pipe that keeps its capacity (a grown one would take the whole frame before the
        // reader goes); the frame is lent with vmsplice.
        "write_frame" => no_reader(
            FramedWriter::new(&w)
                .grow_pipe(false)
                .max_frame(MAX_FRAME)
                .write_frame(&data),
        ),
        "write_frame_timeout" => no_reader(
            FramedWriter::new(&w)
                .grow_pipe(false)
                .max_frame(MAX_FRAME)
                .write_frame_timeout(&data, LIMIT),
        ),
        "zero_copy" => {
            let mut z = ZeroCopyWriter::new(&w).unwrap();
            no_reader(
                data.chunks(PIPE_BUF)
                    .cycle()
                    .try_for_each(|piece| z.send(piece)),
            );
        }
        "vmsplice" => {
            // Kept for the whole process (reachable from a static, so not a leak) and never
            // changed: meets vmsplice's contract.
            static FIXED: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
            let fixed: &'static [u8] = FIXED.get_or_init(|| data.clone());
            let mut at = 0;
            let err = loop {
                // SAFETY: `fixed` lives in a static until the process ends and is never written
                // again.
                match unsafe { ipc_pipe::vmsplice(&w, &fixed[at..]) } {
                    Ok(n) => at = (at + n) % PIPE_BUF,
                    Err(e) => break e,
                }
            };
            assert!(matches!(err, Error::NoReader), "vmsplice: {err:?}");
        }
        "tee" => {
            // One block in a source pipe, duplicated into ours again and again.
            let (src_r, mut src_w) = pipe().unwrap();
            src_w.write_all(&data[..PIPE_BUF]).unwrap();
            let err = loop {
                match ipc_pipe::tee(&src_r, &w, PIPE_BUF) {
                    Ok(n) => assert_eq!(n, PIPE_BUF, "tee copies the whole block"),
                    Err(e) => break e,
                }
            };
            assert!(matches!(err, Error::NoReader), "tee: {err:?}");
        }
        // Any-descriptor calls: the closure form covers them.
        "splice" | "copy" => {
            let mut src = std::fs::File::from(
                rustix::fs::memfd_create("ipcrs-sigpipe", rustix::fs::MemfdFlags::CLOEXEC).unwrap(),
            );
            src.write_all(&data).unwrap();
            src.write_all(&data).unwrap();
            rustix::fs::seek(&src, rustix::fs::SeekFrom::Start(0)).unwrap();
            let r = sigpipe::suppressed(|| {
                if path == "copy" {
                    return ipc_pipe::copy(&src, &w, None).map(|_| ());
                }
                loop {
                    let n = ipc_pipe::splice(&src, &w, BIG)?;
                    assert!(n > 0, "the source ran dry before the reader left");
                }
            })
            .unwrap();
            no_reader(r);
        }
        other => panic!("unknown path {other}"),
    }
    // Still alive: the mask is restored and nothing was pending. One more write for the
    // road, through the plain path under `Suppress`.
    assert!(matches!(w.write_atomic(b"x"), Err(Error::NoReader)));
}

#[test]
fn a_reader_closing_mid_transfer_does_not_kill_a_suppressing_writer_on_any_path() {
    if let Some(path) = role() {
        mid_transfer_child(&path);
        return;
    }
    let _wd = Watchdog::new("SIGPIPE mid-transfer", LIMIT);
    let test =
        test_path!(a_reader_closing_mid_transfer_does_not_kill_a_suppressing_writer_on_any_path);
    let mut failed = Vec::new();
    for path in PATHS {
        let (mut r, w) = pipe().unwrap();
        let mut cmd = child(&test, path);
        cmd.stdout(std::process::Stdio::null());
        ChildFds::new().fd_at(3, w).apply(&mut cmd).unwrap();
        let mut p = Proc::spawn(&mut cmd).unwrap();
        drop(cmd);
        // Take two pipefuls, check them, and go away while the child is writing.
        let mut got = vec![0; TAKEN];
        r.read_exact(&mut got).unwrap();
        let mut want = stream(TAKEN + 4);
        if path.starts_with("write_frame") {
            let header = u32::try_from(BIG).unwrap().to_le_bytes();
            want.splice(0..0, header);
        }
        assert!(
            got == want[..TAKEN],
            "{path}: the data that arrived is not what was sent"
        );
        drop(r);
        let status = p.wait_timeout(LIMIT).unwrap();
        if !status.success() {
            failed.push(format!("{path}: {status}"));
        }
    }
    assert!(
        failed.is_empty(),
        "writers that died or failed: {failed:#?}"
    );
}

/// The calling thread's signal mask with SIGPIPE blocked (`block`) or unblocked.
fn mask_sigpipe(block: bool) {
    let mut set = MaybeUninit::<libc::sigset_t>::zeroed();
    // SAFETY: valid pointer; sigemptyset initialises the set.
    unsafe { libc::sigemptyset(set.as_mut_ptr()) };
    // SAFETY: initialised above; SIGPIPE is a valid signal.
    unsafe { libc::sigaddset(set.as_mut_ptr(), libc::SIGPIPE) };
    let how = if block {
        libc::SIG_BLOCK
    } else {
        libc::SIG_UNBLOCK
    };
    // SAFETY: a valid, initialised set; the old mask is not asked for.
    let r = unsafe { libc::pthread_sigmask(how, set.as_ptr(), std::ptr::null_mut()) };
    assert_eq!(r, 0);
}

/// Whether SIGPIPE is pending for this thread or the process.
fn sigpipe_pending() -> bool {
    let mut set = MaybeUninit::<libc::sigset_t>::zeroed();
    // SAFETY: valid pointer; sigpending fills the set.
    assert_eq!(unsafe { libc::sigpending(set.as_mut_ptr()) }, 0);
    // SAFETY: filled by sigpending.
    unsafe { libc::sigismember(set.as_ptr(), libc::SIGPIPE) == 1 }
}

/// Takes the pending SIGPIPE off the queue (it must be there).
fn take_sigpipe() {
    let mut set = MaybeUninit::<libc::sigset_t>::zeroed();
    // SAFETY: valid pointer; sigemptyset initialises the set.
    unsafe { libc::sigemptyset(set.as_mut_ptr()) };
    // SAFETY: initialised above.
    unsafe { libc::sigaddset(set.as_mut_ptr(), libc::SIGPIPE) };
    let zero = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid set and timeout; no siginfo asked for.
    let got = unsafe { libc::sigtimedwait(set.as_ptr(), std::ptr::null_mut(), &zero) };
    assert_eq!(got, libc::SIGPIPE);
}

#[test]
fn suppress_consumes_only_its_own_sigpipe_also_when_the_caller_blocks_it() {
    if role().is_some() {
        sigpipe::restore_default().unwrap();
        let (r, mut w) = pipe().unwrap();
        w.set_sigpipe_policy(SigpipePolicy::Suppress);
        drop(r);
        // 1. The caller blocks SIGPIPE itself and has none pending: the write's SIGPIPE must
        //    not stay behind, to kill the process when the caller unblocks it.
        mask_sigpipe(true);
        assert!(matches!(w.write_atomic(b"x"), Err(Error::NoReader)));
        assert!(
            !sigpipe_pending(),
            "the suppressed write left its SIGPIPE pending"
        );
        let r = sigpipe::suppressed(|| (&w).write(b"y")).unwrap();
        assert_eq!(r.unwrap_err().kind(), ErrorKind::BrokenPipe);
        assert!(!sigpipe_pending(), "suppressed() left its SIGPIPE pending");
        // 2. A SIGPIPE that was pending before belongs to the caller: it stays.
        // SAFETY: raise sends SIGPIPE to this thread, where it is blocked: it stays pending.
        assert_eq!(unsafe { libc::raise(libc::SIGPIPE) }, 0);
        assert!(sigpipe_pending());
        assert!(matches!(w.write_atomic(b"x"), Err(Error::NoReader)));
        assert!(sigpipe_pending(), "the caller's own SIGPIPE was eaten");
        take_sigpipe();
        assert!(!sigpipe_pending());
        // 3. Unblocked again, nothing is pending: the process lives on.
        mask_sigpipe(false);
        assert!(matches!(w.write_atomic(b"x"), Err(Error::NoReader)));
        return;
    }
    let _wd = Watchdog::new("own SIGPIPE only", LIMIT);
    let cmd = child(
        &test_path!(suppress_consumes_only_its_own_sigpipe_also_when_the_caller_blocks_it),
        "mask",
    );
    crate::spawn(cmd).expect_success(LIMIT);
}
