//! Pipes handed to child processes: standard streams, chosen descriptor numbers, no strays.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::time::Duration;

use ipc_pipe::{ChildFds, Duplex, FramedReader, FramedWriter, pipe};
use ipc_testkit::{Proc, Watchdog, child, fnv1a64, role, test_path};

use crate::{LIMIT, payload, spawn};

/// Marks the start of the child's answer on its stdout, after the re-run harness's own lines.
const MARK: &[u8] = b"\n<<ipc-pipe-data>>";

#[test]
fn parent_to_child_and_back_through_stdin_and_stdout() {
    if role().is_some() {
        // Child: read all of stdin, answer with the mark, the length, the checksum and the
        // bytes reversed.
        let mut data = Vec::new();
        std::io::stdin().read_to_end(&mut data).unwrap();
        data.reverse();
        let mut out = std::io::stdout().lock();
        out.write_all(MARK).unwrap();
        out.write_all(&(data.len() as u64).to_le_bytes()).unwrap();
        out.write_all(&fnv1a64(&data).to_le_bytes()).unwrap();
        out.write_all(&data).unwrap();
        out.flush().unwrap();
        return;
    }
    let _wd = Watchdog::new("stdin/stdout round trip", LIMIT);
    let (child_in, mut to_child) = pipe().unwrap();
    let (mut from_child, child_out) = pipe().unwrap();
    let mut cmd = child(
        &test_path!(parent_to_child_and_back_through_stdin_and_stdout),
        "echo",
    );
    cmd.stdin(child_in).stdout(child_out);
    let proc = Proc::spawn(&mut cmd).unwrap();
    drop(cmd);
    let data = payload(1, 1 << 20);
    // Write from a thread: the child answers only after end-of-file, and 1 MiB exceeds the pipe.
    let sent = data.clone();
    let writer = std::thread::spawn(move || {
        to_child.write_all(&sent).unwrap();
    });
    let mut out = Vec::new();
    from_child.read_to_end(&mut out).unwrap();
    writer.join().unwrap();
    proc.expect_success(LIMIT);
    let at = out
        .windows(MARK.len())
        .position(|w| w == MARK)
        .expect("child's mark")
        + MARK.len();
    let len = u64::from_le_bytes(out[at..at + 8].try_into().unwrap()) as usize;
    let sum = u64::from_le_bytes(out[at + 8..at + 16].try_into().unwrap());
    let body = &out[at + 16..at + 16 + len];
    let mut expected = data;
    expected.reverse();
    assert_eq!(len, expected.len());
    assert_eq!(sum, fnv1a64(&expected));
    assert_eq!(body, &expected[..]);
}

#[test]
fn pipes_at_chosen_descriptor_numbers_even_when_numbers_collide() {
    if role().is_some() {
        // Child: requests on fd 3.. are answered on fd 4.., framed, until end-of-file.
        let r = crate::inherited_reader(std::env::var("RFD").unwrap().parse().unwrap());
        let w = crate::inherited_writer(std::env::var("WFD").unwrap().parse().unwrap());
        let mut rx = FramedReader::new(&r);
        let mut tx = FramedWriter::new(&w);
        while let Some(req) = rx.read_frame().unwrap() {
            tx.write_frame(&fnv1a64(&req).to_le_bytes()).unwrap();
        }
        return;
    }
    let _wd = Watchdog::new("fd map", LIMIT);
    let (child_r, mut to_child) = pipe().unwrap();
    let (mut from_child, child_w) = pipe().unwrap();
    // Put each end at the number the *other* one has in the parent: a naive dup2 sequence
    // would overwrite the second before moving it.
    let (rfd, wfd) = (child_w.as_raw_fd(), child_r.as_raw_fd());
    let mut cmd = child(
        &test_path!(pipes_at_chosen_descriptor_numbers_even_when_numbers_collide),
        "fdmap",
    );
    cmd.env("RFD", rfd.to_string()).env("WFD", wfd.to_string());
    ChildFds::new()
        .fd_at(rfd, child_r)
        .fd_at(wfd, child_w)
        .apply(&mut cmd)
        .unwrap();
    let proc = spawn(cmd);
    let mut tx = FramedWriter::new(&mut to_child);
    let mut rx = FramedReader::new(&mut from_child);
    for i in 0..100u64 {
        let req = payload(i, (i as usize * 997) % 20_000);
        tx.write_frame(&req).unwrap();
        let reply = rx.read_frame().unwrap().expect("a reply");
        assert_eq!(reply, fnv1a64(&req).to_le_bytes());
    }
    drop(to_child);
    assert_eq!(
        rx.read_frame().unwrap(),
        None,
        "child closes after end-of-file"
    );
    proc.expect_success(LIMIT);
}

#[test]
fn a_child_spawned_meanwhile_holds_no_stray_pipe_end() {
    if role().is_some() {
        // Child: report every descriptor that refers to the parent's pipe (there must be
        // none), then wait for the parent to close stdin.
        let theirs = std::env::var("PIPE").unwrap();
        let mut strays = Vec::new();
        for e in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
            let target = std::fs::read_link(e.path()).unwrap_or_default();
            if target.to_string_lossy() == theirs {
                strays.push(e.file_name());
            }
        }
        assert!(
            strays.is_empty(),
            "stray pipe descriptors in the child: {strays:?}"
        );
        let mut sink = Vec::new();
        std::io::stdin().read_to_end(&mut sink).unwrap();
        return;
    }
    let _wd = Watchdog::new("no strays", LIMIT);
    let (r, w) = pipe().unwrap();
    let (hold_r, hold_w) = pipe().unwrap();
    let mut cmd = child(
        &test_path!(a_child_spawned_meanwhile_holds_no_stray_pipe_end),
        "x",
    );
    let ours = std::fs::read_link(format!("/proc/self/fd/{}", w.as_raw_fd())).unwrap();
    assert!(ours.to_string_lossy().starts_with("pipe:["), "{ours:?}");
    cmd.stdin(hold_r).env("PIPE", ours);
    let proc = spawn(cmd);
    // The child is alive (blocked on stdin) and must not hold `w`: dropping ours gives EOF.
    drop(w);
    let mut buf = [0; 1];
    assert_eq!(
        r.read_timeout(&mut buf, Duration::from_secs(10)).unwrap(),
        0
    );
    drop(hold_w);
    proc.expect_success(LIMIT);
}

#[test]
fn duplex_request_reply_with_a_child() {
    if role().is_some() {
        #[allow(unsafe_code)]
        // SAFETY: the parent placed the duplex at 3 and 4 (attach_at); nothing else in this
        // re-run test process owns those numbers.
        let mut d = unsafe { Duplex::from_inherited(3, 4) }.unwrap();
        let mut line = [0u8; 8];
        loop {
            match d.read_exact(&mut line) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) => panic!("{e}"),
            }
            let n = u64::from_le_bytes(line);
            d.write_all(&(n * n).to_le_bytes()).unwrap();
        }
        return;
    }
    let _wd = Watchdog::new("duplex", LIMIT);
    let (mut ours, theirs) = ipc_pipe::duplex().unwrap();
    let mut cmd = child(&test_path!(duplex_request_reply_with_a_child), "square");
    theirs.attach_at(&mut cmd, 3, 4).unwrap();
    let proc = spawn(cmd);
    for n in 0..1000u64 {
        ours.write_all(&n.to_le_bytes()).unwrap();
        let mut reply = [0; 8];
        ours.read_exact(&mut reply).unwrap();
        assert_eq!(u64::from_le_bytes(reply), n * n);
    }
    let (mut r, w) = ours.into_parts();
    drop(w);
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    proc.expect_success(LIMIT);
}

#[test]
fn bad_target_numbers_are_typed_errors_not_panics() {
    let (_r, w) = pipe().unwrap();
    let mut cmd = std::process::Command::new("true");
    match ChildFds::new().fd_at(-1, w).apply(&mut cmd) {
        Err(ipc_pipe::Error::InvalidDescriptor { fd: -1, reason }) => {
            assert!(reason.contains("negative"), "{reason}");
        }
        other => panic!("expected InvalidDescriptor, got {other:?}"),
    }
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap();
    for target in [i32::try_from(limit).unwrap_or(i32::MAX), i32::MAX] {
        let (_r, w) = pipe().unwrap();
        match ChildFds::new().fd_at(target, w).apply(&mut cmd) {
            Err(ipc_pipe::Error::InvalidDescriptor { fd, reason }) => {
                assert_eq!(fd, target);
                assert!(reason.contains("RLIMIT_NOFILE"), "{reason}");
            }
            other => panic!("target {target}: expected InvalidDescriptor, got {other:?}"),
        }
    }
    // The refused mapping left `cmd` as it was: it still runs.
    assert!(cmd.status().unwrap().success());
}

/// The lowest two free descriptor numbers (probed with duplicates of `fd`): where `spawn` will
/// put its exec-error pipe, read end first.
fn next_two_free(fd: &impl std::os::fd::AsFd) -> (i32, i32) {
    let a = rustix::io::fcntl_dupfd_cloexec(fd, 0).unwrap();
    let b = rustix::io::fcntl_dupfd_cloexec(fd, 0).unwrap();
    (a.as_raw_fd(), b.as_raw_fd())
}

#[test]
fn a_target_where_spawn_puts_its_own_pipe_breaks_neither() {
    if role().is_some() {
        // This process has one test thread: nothing else opens descriptors meanwhile. std's
        // spawn reports a failed exec through a pipe it creates at the lowest free numbers;
        // its write end would sit on `target` in the child.
        let (r, w) = pipe().unwrap();
        let (_, target) = next_two_free(&w);
        let mut cmd = std::process::Command::new("/nonexistent/ipcrs-no-such-program");
        ChildFds::new().fd_at(target, w).apply(&mut cmd).unwrap();
        let err = cmd
            .spawn()
            .expect_err("spawning a program that does not exist");
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound, "{err}");
        drop(cmd);
        let mut junk = Vec::new();
        (&r).read_to_end(&mut junk).unwrap();
        assert!(
            junk.is_empty(),
            "spawn's error report went into our pipe: {junk:?}"
        );
        // And a program that exists finds our pipe at that number.
        let (mut r, w) = pipe().unwrap();
        let (_, target) = next_two_free(&w);
        let mut cmd = std::process::Command::new("sh");
        cmd.args(["-c", &format!("echo at {target} >&{target}")]);
        ChildFds::new().fd_at(target, w).apply(&mut cmd).unwrap();
        let mut child = cmd.spawn().unwrap();
        drop(cmd);
        let mut out = String::new();
        r.read_to_string(&mut out).unwrap();
        assert_eq!(out, format!("at {target}\n"));
        assert!(child.wait().unwrap().success());
        return;
    }
    let _wd = Watchdog::new("spawn's own pipe", LIMIT);
    let cmd = child(
        &test_path!(a_target_where_spawn_puts_its_own_pipe_breaks_neither),
        "x",
    );
    spawn(cmd).expect_success(LIMIT);
}
