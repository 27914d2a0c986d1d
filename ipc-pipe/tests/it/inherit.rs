//! Taking pipe ends a process was given: numbers placed by the parent (`from_inherited`, unsafe:
//! only the caller knows nobody else owns the number) and the standard streams (`dup_stdin`,
//! `dup_stdout`, `dup_stderr`, safe: they duplicate what `std::io` lends).
//!
//! Descriptor numbers are probed in child processes, where this test is the only thread that
//! opens or closes descriptors: in the harness another test could reuse a freed number meanwhile.
// Releasing descriptors into raw numbers and claiming them is the point here.
#![allow(unsafe_code)]

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::process::Stdio;

use ipc_pipe::{Duplex, Error, PipeReader, PipeWriter, pipe};
use ipc_testkit::{Watchdog, child, role, test_path};

use crate::{LIMIT, spawn};

/// Marks where the child's data starts on a stream the re-run harness also prints to.
const MARK: &[u8] = b"\n<<ipc-pipe-std>>";

/// Whether `fd` is open and close-on-exec.
fn cloexec(fd: RawFd) -> bool {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap();
    let flags = info
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .unwrap()
        .trim()
        .to_owned();
    u32::from_str_radix(&flags, 8).unwrap() & 0o2000000 != 0
}

/// Claims raw number `fd` as a read end; the number must be owned by nobody (released with
/// `into_raw_fd`, or never opened): a refusal leaves it as it was.
fn claim_reader(fd: RawFd) -> ipc_pipe::Result<PipeReader> {
    // SAFETY: every caller passes a number nothing in this process owns (released with
    // `into_raw_fd`, never opened, or refused before use: 0..=2 and negative numbers).
    unsafe { PipeReader::from_inherited(fd) }
}

fn claim_writer(fd: RawFd) -> ipc_pipe::Result<PipeWriter> {
    // SAFETY: as for `claim_reader`.
    unsafe { PipeWriter::from_inherited(fd) }
}

/// Takes back a number released with `into_raw_fd`, so that it is closed.
fn reown(fd: RawFd) -> OwnedFd {
    // SAFETY: `fd` was released with `into_raw_fd` by the caller and refused by the claim, so
    // nothing owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn refused(r: ipc_pipe::Result<impl std::fmt::Debug>, fd: RawFd, reason: &str) {
    match r {
        Err(Error::InvalidDescriptor {
            fd: got,
            reason: why,
        }) => {
            assert_eq!(got, fd, "{why}");
            assert!(
                why.contains(reason),
                "fd {fd}: {why:?} does not say {reason:?}"
            );
        }
        other => panic!("fd {fd}: expected InvalidDescriptor ({reason}), got {other:?}"),
    }
}

fn not_a_pipe(r: ipc_pipe::Result<impl std::fmt::Debug>, fd: RawFd, found: &str) {
    match r {
        Err(Error::NotAPipe {
            fd: got,
            found: what,
        }) => {
            assert_eq!((got, what), (fd, found));
        }
        other => panic!("fd {fd}: expected NotAPipe ({found}), got {other:?}"),
    }
}

#[test]
fn from_inherited_refuses_what_it_cannot_own_and_leaves_it_alone() {
    if role().is_some() {
        // The standard streams belong to std::io; negative numbers are nobody's.
        for fd in 0..=2 {
            refused(claim_reader(fd), fd, "standard streams");
            refused(claim_writer(fd), fd, "standard streams");
        }
        refused(claim_reader(-1), -1, "negative");
        // A number that is not open.
        let free = pipe().unwrap().0.into_raw_fd();
        drop(reown(free));
        refused(claim_reader(free), free, "not an open descriptor");
        // Not pipes: a regular file, a character device, a socket, a directory.
        let file = std::fs::File::open("/proc/self/exe").unwrap().into_raw_fd();
        not_a_pipe(claim_reader(file), file, "a regular file");
        let null = std::fs::File::open("/dev/null").unwrap().into_raw_fd();
        not_a_pipe(
            claim_writer(null),
            null,
            "a character device (a terminal, /dev/null, ...)",
        );
        let (sock, _peer) = UnixStream::pair().unwrap();
        let sock = sock.into_raw_fd();
        not_a_pipe(claim_reader(sock), sock, "a socket");
        let dir = std::fs::File::open("/").unwrap().into_raw_fd();
        not_a_pipe(claim_reader(dir), dir, "a directory");
        // Pipe ends the wrong way round, and an O_PATH handle that can do neither.
        let (r, w) = pipe().unwrap();
        let (r, w) = (r.into_raw_fd(), w.into_raw_fd());
        refused(claim_reader(w), w, "a write end");
        refused(claim_writer(r), r, "a read end");
        let path = rustix::fs::open(
            format!("/proc/self/fd/{r}"),
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .unwrap()
        .into_raw_fd();
        refused(claim_reader(path), path, "O_PATH");
        // Every refused descriptor is still open and unchanged: take them back and use the pipe.
        for fd in [file, null, sock, dir, path] {
            drop(reown(fd));
        }
        let mut reader = claim_reader(r).expect("the read end");
        let mut writer = claim_writer(w).expect("the write end");
        assert!(cloexec(r) && cloexec(w));
        writer.write_all(b"claimed").unwrap();
        drop(writer);
        let mut got = String::new();
        reader.read_to_string(&mut got).unwrap();
        assert_eq!(got, "claimed");
        // A number is claimed once per process, even after its handle is gone.
        drop(reader);
        refused(claim_reader(r), r, "claimed before");
        // A duplex whose write end fails its check closes the read end it claimed.
        let (dr, dw) = pipe().unwrap();
        let (dr, dw) = (dr.into_raw_fd(), dw.into_raw_fd());
        // SAFETY: both numbers were released above and nothing else owns them.
        let r = unsafe { Duplex::from_inherited(dr, dr) };
        refused(r, dr, "claimed before");
        drop(reown(dw));
        return;
    }
    let _wd = Watchdog::new("from_inherited checks", LIMIT);
    let cmd = child(
        &test_path!(from_inherited_refuses_what_it_cannot_own_and_leaves_it_alone),
        "claims",
    );
    spawn(cmd).expect_success(LIMIT);
}

#[test]
fn a_child_takes_its_standard_streams_as_pipe_ends() {
    if role().is_some() {
        let input = PipeReader::dup_stdin().unwrap();
        let output = PipeWriter::dup_stdout().unwrap();
        let errors = PipeWriter::dup_stderr().unwrap();
        for fd in [input.as_raw_fd(), output.as_raw_fd(), errors.as_raw_fd()] {
            assert!(fd > 2, "a duplicate posing as a standard stream: {fd}");
            assert!(cloexec(fd), "fd {fd} is inherited by exec'd children");
        }
        let mut request = Vec::new();
        (&input).read_to_end(&mut request).unwrap();
        // The harness prints on stdout too: mark and length the reply.
        let mut reply = MARK.to_vec();
        reply.extend((request.len() as u64).to_le_bytes());
        reply.extend(request.iter().rev());
        (&output).write_all(&reply).unwrap();
        errors
            .write_atomic(&[MARK, &request[..3]].concat())
            .unwrap();
        return;
    }
    let _wd = Watchdog::new("dup_std", LIMIT);
    let (child_in, mut to_child) = pipe().unwrap();
    let (mut from_out, child_out) = pipe().unwrap();
    let (mut from_err, child_err) = pipe().unwrap();
    let mut cmd = child(
        &test_path!(a_child_takes_its_standard_streams_as_pipe_ends),
        "std",
    );
    cmd.stdin(child_in).stdout(child_out).stderr(child_err);
    let p = ipc_testkit::Proc::spawn(&mut cmd).unwrap();
    drop(cmd);
    let request = crate::payload(3, 50_000);
    to_child.write_all(&request).unwrap();
    drop(to_child);
    // The child writes its reply only after end-of-file on stdin, so reading stdout to the
    // end before stderr cannot deadlock (the harness writes little on either).
    let mut out = Vec::new();
    from_out.read_to_end(&mut out).unwrap();
    let mut err = Vec::new();
    from_err.read_to_end(&mut err).unwrap();
    p.expect_success(LIMIT);
    let at = |v: &[u8]| v.windows(MARK.len()).position(|w| w == MARK).unwrap() + MARK.len();
    let start = at(&out);
    let len = u64::from_le_bytes(out[start..start + 8].try_into().unwrap()) as usize;
    let reply = &out[start + 8..start + 8 + len];
    let mut want: Vec<u8> = request.clone();
    want.reverse();
    assert!(reply == want, "the reply is not the request reversed");
    assert_eq!(&err[at(&err)..at(&err) + 3], &request[..3]);
}

#[test]
fn standard_streams_that_are_not_pipes_are_typed_errors() {
    if let Some(role) = role() {
        match role.as_str() {
            "not-pipes" => {
                not_a_pipe(
                    PipeReader::dup_stdin(),
                    0,
                    "a character device (a terminal, /dev/null, ...)",
                );
                not_a_pipe(PipeWriter::dup_stdout(), 1, "a regular file");
                not_a_pipe(PipeWriter::dup_stderr(), 2, "a socket");
            }
            "wrong-way" => {
                refused(PipeReader::dup_stdin(), 0, "a write end");
                refused(PipeWriter::dup_stderr(), 2, "a read end");
            }
            "closed" => {
                // std reopens a closed descriptor 0 on /dev/null before `main`, so close it
                // here (nothing in this child reads stdin).
                // SAFETY: descriptor 0 is std's; nothing in this child uses it again.
                assert_eq!(unsafe { libc::close(0) }, 0);
                refused(PipeReader::dup_stdin(), 0, "not an open descriptor");
            }
            other => panic!("{other}"),
        }
        return;
    }
    let _wd = Watchdog::new("dup_std errors", LIMIT);
    let test = test_path!(standard_streams_that_are_not_pipes_are_typed_errors);
    // A terminal-like device, a file and a socket.
    let out = std::env::temp_dir().join(ipc_testkit::unique("stdout"));
    let file = std::fs::File::create(&out).unwrap();
    let (sock, _peer) = UnixStream::pair().unwrap();
    let mut cmd = child(&test, "not-pipes");
    cmd.stdin(Stdio::null())
        .stdout(file)
        .stderr(OwnedFd::from(sock));
    let status = ipc_testkit::Proc::spawn(&mut cmd)
        .unwrap()
        .wait_timeout(LIMIT);
    drop(cmd);
    let _ = std::fs::remove_file(&out);
    assert!(status.unwrap().success());
    // Pipe ends the wrong way round: a write end as stdin, a read end as stderr (the harness
    // prints on stdout).
    let (r, w) = pipe().unwrap();
    let mut cmd = child(&test, "wrong-way");
    cmd.stdin(w).stderr(r);
    spawn(cmd).expect_success(LIMIT);
    // Standard input closed.
    spawn(child(&test, "closed")).expect_success(LIMIT);
}
