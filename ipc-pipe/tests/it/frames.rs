//! Framed messages against a hostile or dying peer.

use std::io::{ErrorKind, Write};

use ipc_pipe::{ChildFds, Error, FramedReader, FramedWriter, pipe};
use ipc_testkit::{Watchdog, child, role, test_path};

use crate::{LIMIT, spawn};

/// Runs this test's child with `role`, connected to a fresh pipe at fd 3, and returns a reader
/// over everything it wrote (read after the child exits).
fn from_child(test: &str, role: &str) -> Vec<u8> {
    let (r, w) = pipe().unwrap();
    let mut cmd = child(test, role);
    ChildFds::new().fd_at(3, w).apply(&mut cmd).unwrap();
    let p = spawn(cmd);
    let mut all = Vec::new();
    std::io::Read::read_to_end(&mut &r, &mut all).unwrap();
    p.expect_success(LIMIT);
    all
}

#[test]
fn a_hostile_length_is_refused_before_any_allocation() {
    if role().is_some() {
        let mut w = crate::inherited_writer(3);
        w.write_all(&u32::MAX.to_le_bytes()).unwrap();
        w.write_all(b"and then nothing").unwrap();
        return;
    }
    let _wd = Watchdog::new("hostile length", LIMIT);
    let test = test_path!(a_hostile_length_is_refused_before_any_allocation);
    // Read straight from the pipe while the child is alive: the header alone decides.
    let (r, w) = pipe().unwrap();
    let mut cmd = child(&test, "h");
    ChildFds::new().fd_at(3, w).apply(&mut cmd).unwrap();
    let p = spawn(cmd);
    let mut rx = FramedReader::new(&r).max_frame(1 << 20);
    let mut buf = Vec::new();
    match rx.read_frame_into(&mut buf) {
        Err(Error::MessageTooLarge { len, max }) => {
            assert_eq!((len, max), (u64::from(u32::MAX), 1 << 20));
        }
        other => panic!("expected MessageTooLarge, got {other:?}"),
    }
    assert_eq!(buf.capacity(), 0, "nothing allocated for a refused frame");
    p.expect_success(LIMIT);
    // Even a reader that accepts u32::MAX allocates by what arrives, not by what is announced:
    // the 16 bytes that follow, then end-of-file inside the frame.
    let bytes = from_child(&test, "h");
    let mut rx = FramedReader::new(&bytes[..]).max_frame(u32::MAX);
    let err = rx.read_frame_into(&mut buf).unwrap_err();
    assert_eq!(std::io::Error::from(err).kind(), ErrorKind::UnexpectedEof);
    assert!(
        buf.capacity() < 1 << 20,
        "allocated {} bytes",
        buf.capacity()
    );
}

#[test]
fn a_frame_cut_short_is_unexpected_eof() {
    if let Some(role) = role() {
        let w = crate::inherited_writer(3);
        let mut tx = FramedWriter::new(&w);
        tx.write_frame(b"a whole frame").unwrap();
        match role.as_str() {
            "payload" => {
                (&w).write_all(&100u32.to_le_bytes()).unwrap();
                (&w).write_all(&[1; 50]).unwrap();
            }
            "header" => (&w).write_all(&[100, 0]).unwrap(),
            _ => unreachable!(),
        }
        return; // exiting closes the pipe mid-frame
    }
    let _wd = Watchdog::new("truncated frame", LIMIT);
    for cut in ["payload", "header"] {
        let bytes = from_child(&test_path!(a_frame_cut_short_is_unexpected_eof), cut);
        let mut rx = FramedReader::new(&bytes[..]);
        assert_eq!(rx.read_frame().unwrap().unwrap(), b"a whole frame");
        let err = rx.read_frame().unwrap_err();
        assert!(
            matches!(&err, Error::Io(e) if e.kind() == ErrorKind::UnexpectedEof),
            "{cut}: {err:?}"
        );
        assert_eq!(std::io::Error::from(err).kind(), ErrorKind::UnexpectedEof);
    }
}

#[test]
fn frames_larger_than_the_pipe_cross_whole() {
    if role().is_some() {
        let w = crate::inherited_writer(3);
        let mut tx = FramedWriter::new(&w).max_frame(4 << 20);
        for i in 0..8u64 {
            tx.write_frame(&crate::payload(i, (i as usize + 1) * 300_001))
                .unwrap();
        }
        assert!(matches!(
            tx.write_frame(&vec![0; (4 << 20) + 1]),
            Err(Error::MessageTooLarge { .. })
        ));
        return;
    }
    let _wd = Watchdog::new("large frames", LIMIT);
    let (r, w) = pipe().unwrap();
    let mut cmd = child(&test_path!(frames_larger_than_the_pipe_cross_whole), "big");
    ChildFds::new().fd_at(3, w).apply(&mut cmd).unwrap();
    let p = spawn(cmd);
    let mut rx = FramedReader::new(&r).max_frame(4 << 20);
    let mut buf = Vec::new();
    for i in 0..8u64 {
        let len = rx.read_frame_into(&mut buf).unwrap().unwrap();
        assert_eq!(len, (i as usize + 1) * 300_001);
        assert_eq!(buf, crate::payload(i, len));
    }
    assert_eq!(rx.read_frame().unwrap(), None);
    p.expect_success(LIMIT);
}
