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

/// The bytes of `frames`, framed.
fn framed(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut stream = Vec::new();
    for f in frames {
        stream.extend((f.len() as u32).to_le_bytes());
        stream.extend(f);
    }
    stream
}

#[test]
fn a_non_blocking_reader_keeps_its_place_in_frames_that_arrive_in_pieces() {
    let frames: Vec<Vec<u8>> = (0..40u64)
        .map(|i| crate::payload(i, [0, 1, 3, 4, 5, 100, 4096, 70_000][i as usize % 8]))
        .collect();
    let stream = framed(&frames);
    // Pieces that end everywhere: inside headers, between them, inside payloads.
    let mut rng = ipc_testkit::SplitMix64::new(9);
    let mut pieces = Vec::new();
    let mut at = 0;
    while at < stream.len() {
        let len = [1, 2, 3, 5, 777, 4096, 30_000][rng.range(0, 6) as usize].min(stream.len() - at);
        pieces.push(&stream[at..at + len]);
        at += len;
    }
    let (r, mut w) = pipe().unwrap();
    r.set_nonblocking(true).unwrap();
    let mut rx = FramedReader::new(&r).max_frame(1 << 20);
    let mut got = Vec::new();
    let mut buf = Vec::new();
    let mut would_block = 0;
    for piece in pieces {
        w.write_all(piece).unwrap();
        loop {
            match rx.read_frame_into(&mut buf) {
                Ok(Some(n)) => {
                    assert_eq!(n, buf.len());
                    got.push(buf.clone());
                }
                Err(Error::WouldBlock) => {
                    would_block += 1;
                    break;
                }
                other => panic!("frame {}: {other:?}", got.len()),
            }
        }
    }
    drop(w);
    assert!(matches!(rx.read_frame_into(&mut buf), Ok(None)));
    assert!(would_block > frames.len(), "the pieces did split frames");
    assert_eq!(got.len(), frames.len());
    assert!(got == frames, "frames arrived changed");
}

#[test]
fn try_and_timeout_forms_keep_a_partial_frame_for_the_next_call() {
    let (r, mut w) = pipe().unwrap();
    let mut rx = FramedReader::new(&r);
    let frame = crate::payload(5, 10_000);
    let stream = framed(std::slice::from_ref(&frame));
    let mut buf = Vec::new();
    assert!(matches!(
        rx.try_read_frame_into(&mut buf),
        Err(Error::WouldBlock)
    ));
    w.write_all(&stream[..2]).unwrap();
    assert!(matches!(
        rx.try_read_frame_into(&mut buf),
        Err(Error::WouldBlock)
    ));
    w.write_all(&stream[2..5000]).unwrap();
    assert!(matches!(
        rx.read_frame_into_timeout(&mut buf, std::time::Duration::from_millis(5)),
        Err(Error::TimedOut { written: 0 })
    ));
    assert!(
        buf.is_empty(),
        "nothing is handed out before the frame is whole"
    );
    w.write_all(&stream[5000..]).unwrap();
    assert_eq!(rx.try_read_frame().unwrap(), Some(frame));
    drop(w);
    assert_eq!(
        rx.read_frame_timeout(std::time::Duration::MAX).unwrap(),
        None
    );
}

#[test]
fn after_a_refused_or_truncated_frame_the_reader_never_reads_on() {
    // A frame above the maximum, followed by bytes that look like a small frame: refused,
    // and refused again, never taken for the frame "abc".
    let mut stream = 11u32.to_le_bytes().to_vec();
    stream.extend([3, 0, 0, 0, b'a', b'b', b'c']);
    let mut rx = FramedReader::new(&stream[..]).max_frame(10);
    for _ in 0..3 {
        assert!(matches!(
            rx.read_frame(),
            Err(Error::MessageTooLarge { len: 11, max: 10 })
        ));
    }
    // A stream that ends inside a frame: UnexpectedEof, every time, never a clean end.
    for cut in [&[7u8, 0][..], &[3, 0, 0, 0, b'x'][..]] {
        let mut rx = FramedReader::new(cut);
        for _ in 0..3 {
            let err = rx.read_frame().unwrap_err();
            assert_eq!(std::io::Error::from(err).kind(), ErrorKind::UnexpectedEof);
        }
    }
}

#[test]
fn a_frame_buffer_never_grows_beyond_the_announced_length() {
    for len in [1usize, 4095, 65_536, 65_537, 100_000, 300_001, 1 << 20] {
        let frame = crate::payload(len as u64, len);
        let stream = framed(std::slice::from_ref(&frame));
        // Through a real pipe, read in whatever pieces the pipe yields.
        let (r, w) = pipe().unwrap();
        let writer = std::thread::spawn(move || (&w).write_all(&stream));
        let mut rx = FramedReader::new(&r).max_frame(len as u32);
        let mut buf = Vec::new();
        assert_eq!(rx.read_frame_into(&mut buf).unwrap(), Some(len));
        writer.join().unwrap().unwrap();
        assert!(buf == frame, "frame of {len} bytes changed");
        assert!(
            buf.capacity() <= len,
            "{} bytes allocated for a frame of {len} (the maximum)",
            buf.capacity()
        );
    }
}

/// A `Read` that claims to have read more than it was given.
struct Lying;

impl std::io::Read for Lying {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        buf.fill(0);
        buf[0] = 9;
        Ok(buf.len() + 7)
    }
}

/// A `Write` that claims to have written more than it was given.
struct Boasting;

impl std::io::Write for Boasting {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Ok(buf.len() + 7)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn inner_readers_and_writers_that_overstate_counts_cause_no_panic() {
    // The header reads as 9: above a maximum of 8, refused; within the default, a frame of
    // what the reader really put there (its first read, read ahead, holds the header and
    // zeros). No panic either way.
    let mut rx = FramedReader::new(Lying).max_frame(8);
    assert!(matches!(
        rx.read_frame(),
        Err(Error::MessageTooLarge { len: 9, max: 8 })
    ));
    let mut rx = FramedReader::new(Lying);
    assert_eq!(rx.read_frame().unwrap().unwrap(), [0; 9]);
    let mut tx = FramedWriter::from_write(Boasting);
    assert!(matches!(tx.write_frame(b"small"), Err(Error::Io(_))));
    assert!(matches!(tx.write_frame(&[0; 10_000]), Err(Error::Io(_))));
}

#[test]
fn a_frame_cut_short_by_a_full_non_blocking_pipe_stops_the_writer() {
    let (r, w) = pipe().unwrap();
    w.set_nonblocking(true).unwrap();
    // The pipe keeps its 64 KiB (a grown pipe would have room for both frames).
    let mut tx = FramedWriter::new(&w).grow_pipe(false);
    tx.write_frame(&[1; 60_000]).unwrap();
    // Room for about 5 KiB more: this frame goes out in part, and is cut.
    let err = tx.write_frame(&[2; 20_000]).unwrap_err();
    let Error::FrameCutShort { written, len } = err else {
        panic!("expected FrameCutShort, got {err:?}");
    };
    assert_eq!(len, 20_004);
    assert!(written > 0 && written < len);
    // The reader takes the first frame, so there is room again; but a retry would start a new
    // header inside the cut frame: refused, now and later.
    let mut rx = FramedReader::new(&r);
    assert_eq!(rx.read_frame().unwrap().unwrap(), vec![1; 60_000]);
    for _ in 0..2 {
        assert!(matches!(
            tx.write_frame(b"next"),
            Err(Error::FrameCutShort { .. })
        ));
    }
    let _ = tx.into_inner();
    drop(w);
    // The reader sees a frame that ends early: never a wrong frame.
    let err = rx.read_frame().unwrap_err();
    assert_eq!(std::io::Error::from(err).kind(), ErrorKind::UnexpectedEof);
    // Nothing went out: a full pipe says WouldBlock (or TimedOut) and the writer stays usable.
    let (r, w) = pipe().unwrap();
    let mut tx = FramedWriter::new(&w);
    (&w).write_all(&[0; 65_536]).unwrap();
    assert!(matches!(
        tx.write_frame_timeout(b"late", std::time::Duration::from_millis(5)),
        Err(Error::TimedOut { written: 0 })
    ));
    w.set_nonblocking(true).unwrap();
    assert!(matches!(tx.write_frame(b"late"), Err(Error::WouldBlock)));
    let mut drain = vec![0; 65_536];
    std::io::Read::read_exact(&mut &r, &mut drain).unwrap();
    tx.write_frame(b"late").unwrap();
    assert_eq!(
        FramedReader::new(&r).read_frame().unwrap().unwrap(),
        b"late"
    );
}

#[test]
fn a_large_frame_grows_the_pipe_once_unless_told_not_to() {
    let max = ipc_pipe::pipe_max_size().unwrap() as usize;
    let grown = max.min(1 << 20);
    // A frame of at most a quarter of the capacity: the pipe stays as it is.
    let (r, w) = pipe().unwrap();
    let reader = std::thread::spawn(move || {
        let mut rx = FramedReader::new(&r).max_frame(1 << 20);
        let mut lens = Vec::new();
        while let Some(f) = rx.read_frame().unwrap() {
            lens.push(f.len());
        }
        lens
    });
    let mut tx = FramedWriter::new(&w).max_frame(1 << 20);
    tx.write_frame(&[1; 16_380]).unwrap();
    assert_eq!(
        w.capacity().unwrap(),
        65_536,
        "a small frame left the pipe alone"
    );
    // The first larger one grows it, to 1 MiB (or pipe-max-size).
    tx.write_frame(&[2; 16_381]).unwrap();
    assert_eq!(w.capacity().unwrap(), grown);
    // Shrunk by someone else, it stays shrunk: growing is tried once.
    w.set_capacity(65_536).unwrap();
    tx.write_frame(&[3; 200_000]).unwrap();
    assert_eq!(w.capacity().unwrap(), 65_536);
    drop(tx);
    drop(w);
    assert_eq!(reader.join().unwrap(), [16_380, 16_381, 200_000]);

    let (_r, w) = pipe().unwrap();
    let mut tx = FramedWriter::new(&w).grow_pipe(false);
    tx.write_frame(&[4; 30_000]).unwrap();
    assert_eq!(w.capacity().unwrap(), 65_536, "grow_pipe(false)");
    // A writer made by from_write never touches the pipe.
    let (_r, w) = pipe().unwrap();
    FramedWriter::from_write(&w)
        .write_frame(&[5; 30_000])
        .unwrap();
    assert_eq!(w.capacity().unwrap(), 65_536, "from_write");
}

#[test]
fn frames_cross_whole_when_the_kernel_refuses_to_grow_the_pipe() {
    if role().is_some() {
        // As `nobody`, whose pipe budget applies (root's does not), spend the budget, then
        // frame on a pipe that can no longer grow: nothing is reported, everything arrives.
        let soft: u64 = std::fs::read_to_string(ipc_pipe::PIPE_USER_PAGES_SOFT_FILE)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        if soft == 0 {
            eprintln!("no per-user soft limit on this system: nothing to test");
            return;
        }
        rustix::thread::set_thread_uid(rustix::process::Uid::from_raw(65534)).unwrap();
        let mut hoard = Vec::new();
        loop {
            let (r, w) = pipe().unwrap();
            match w.set_capacity(1 << 20) {
                Ok(_) => hoard.push((r, w)),
                Err(Error::LimitExceeded { .. }) => break,
                Err(e) => panic!("{e:?}"),
            }
            assert!(hoard.len() < 100_000, "no per-user limit reached");
        }
        let (r, w) = pipe().unwrap();
        let before = w.capacity().unwrap();
        let frames: Vec<Vec<u8>> = (0..12u64)
            .map(|i| crate::payload(0xf0 + i, [100_000, 5, 40_000][i as usize % 3]))
            .collect();
        let expect = frames.clone();
        let reader = std::thread::spawn(move || {
            let mut rx = FramedReader::new(&r);
            let mut got = Vec::new();
            while let Some(f) = rx.read_frame().unwrap() {
                got.push(f);
            }
            got
        });
        let mut tx = FramedWriter::new(&w);
        for f in &frames {
            tx.write_frame(f).unwrap();
        }
        assert_eq!(
            w.capacity().unwrap(),
            before,
            "the kernel refused: no growth"
        );
        drop(tx);
        drop(w);
        assert!(reader.join().unwrap() == expect, "frames changed");
        return;
    }
    let _wd = Watchdog::new("growth refused", LIMIT);
    let cmd = child(
        &test_path!(frames_cross_whole_when_the_kernel_refuses_to_grow_the_pipe),
        "nobody",
    );
    spawn(cmd).expect_success(LIMIT);
}

/// Frame sizes around every boundary of the writer and the reader: empty, PIPE_BUF, the
/// zero-copy threshold, the reader's read-ahead and "large" sizes, the pipe's capacities.
fn boundary_len(i: u64) -> usize {
    const LENS: [usize; 16] = [
        0,
        1,
        4092,
        4093,
        16_383,
        16_384,
        32_763,
        32_764,
        65_532,
        65_536,
        65_537,
        300_001,
        524_284,
        1 << 20,
        (1 << 20) + 1,
        2_000_003,
    ];
    LENS[(i % 16) as usize]
}

#[test]
fn lent_and_copied_frames_of_every_size_cross_processes_intact() {
    const FRAMES: u64 = 64;
    if let Some(role) = role() {
        let w = crate::inherited_writer(3);
        let mut tx = FramedWriter::new(&w)
            .zero_copy(role == "lent")
            .max_frame(4 << 20);
        for i in 0..FRAMES {
            tx.write_frame(&crate::payload(0x1e00 + i, boundary_len(i)))
                .unwrap();
        }
        return;
    }
    let _wd = Watchdog::new("lent frames", LIMIT);
    for role in ["lent", "copied"] {
        let (r, w) = pipe().unwrap();
        let mut cmd = child(
            &test_path!(lent_and_copied_frames_of_every_size_cross_processes_intact),
            role,
        );
        ChildFds::new().fd_at(3, w).apply(&mut cmd).unwrap();
        let p = spawn(cmd);
        let mut rx = FramedReader::new(&r).max_frame(4 << 20);
        let mut buf = Vec::new();
        for i in 0..FRAMES {
            let len = rx.read_frame_into(&mut buf).unwrap();
            assert_eq!(len, Some(boundary_len(i)), "{role}: frame {i}");
            assert_eq!(
                ipc_testkit::fnv1a64(&buf),
                ipc_testkit::fnv1a64(&crate::payload(0x1e00 + i, boundary_len(i))),
                "{role}: frame {i} changed"
            );
        }
        assert_eq!(rx.read_frame().unwrap(), None, "{role}: a clean end");
        p.expect_success(LIMIT);
    }
}

/// A `Read` that counts its calls.
struct CountingReads<R> {
    inner: R,
    calls: usize,
}

impl<R: std::io::Read> std::io::Read for CountingReads<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.calls += 1;
        self.inner.read(buf)
    }

    fn read_vectored(&mut self, bufs: &mut [std::io::IoSliceMut<'_>]) -> std::io::Result<usize> {
        self.calls += 1;
        self.inner.read_vectored(bufs)
    }
}

#[test]
fn small_frames_are_read_many_per_read_and_into_parts_returns_what_was_read_ahead() {
    // 2000 frames of 1 to 100 bytes, all in the pipe before the reader starts.
    let frames: Vec<Vec<u8>> = (0..2000u64)
        .map(|i| crate::payload(i, 1 + (i as usize * 37) % 100))
        .collect();
    let stream = framed(&frames);
    let (r, w) = pipe().unwrap();
    w.set_capacity(stream.len().next_power_of_two()).unwrap();
    (&w).write_all(&stream).unwrap();
    drop(w);
    let mut rx = FramedReader::new(CountingReads {
        inner: &r,
        calls: 0,
    });
    let mut buf = Vec::new();
    for (i, f) in frames.iter().enumerate().take(1500) {
        assert_eq!(rx.read_frame_into(&mut buf).unwrap(), Some(f.len()));
        assert!(buf == *f, "frame {i} changed");
    }
    let calls = rx.get_ref().calls;
    assert!(
        calls * 20 < 1500,
        "{calls} reads for 1500 small frames: no read-ahead"
    );
    // What the reader took in and did not return comes back, then the rest of the stream.
    let (mut inner, unread) = rx.into_parts();
    let mut rest = unread;
    std::io::Read::read_to_end(&mut inner.inner, &mut rest).unwrap();
    assert!(rest == framed(&frames[1500..]), "the rest of the stream");
    // A frame in progress comes back with its header.
    let (r, w) = pipe().unwrap();
    r.set_nonblocking(true).unwrap();
    w.write_atomic(&[1, 0, 0, 0, b'x', 5, 0, 0, 0, b'a', b'b'])
        .unwrap();
    let mut rx = FramedReader::new(&r);
    assert_eq!(rx.read_frame().unwrap().as_deref(), Some(&b"x"[..]));
    assert!(matches!(rx.read_frame(), Err(Error::WouldBlock)));
    let (_, unread) = rx.into_parts();
    assert_eq!(unread, [5, 0, 0, 0, b'a', b'b']);
    let (_, unread) = FramedReader::new(&r).into_parts();
    assert!(unread.is_empty(), "nothing taken yet");
}

#[test]
fn a_reused_buffer_keeps_its_allocation() {
    let frames: Vec<Vec<u8>> = (0..50u64)
        .map(|i| crate::payload(i, [200_000, 70_000, 1, 0, 150_000][i as usize % 5]))
        .collect();
    let stream = framed(&frames);
    let mut rx = FramedReader::new(&stream[..]);
    let mut buf = Vec::new();
    assert_eq!(rx.read_frame_into(&mut buf).unwrap(), Some(200_000));
    let at = buf.as_ptr();
    for (i, f) in frames.iter().enumerate().skip(1) {
        assert_eq!(rx.read_frame_into(&mut buf).unwrap(), Some(f.len()));
        assert!(buf == *f, "frame {i} changed");
        assert_eq!(buf.as_ptr(), at, "frame {i} moved the buffer");
    }
    assert_eq!(rx.read_frame_into(&mut buf).unwrap(), None);
}

#[test]
fn a_lent_frame_on_a_full_non_blocking_pipe_says_would_block_and_never_waits() {
    // vmsplice ignores O_NONBLOCK: the writer must not wait in it (it did, once).
    let _wd = Watchdog::new("lent frame, non-blocking", LIMIT);
    let (r, w) = pipe().unwrap();
    w.set_nonblocking(true).unwrap();
    let mut tx = FramedWriter::new(&w).grow_pipe(false);
    // 40 KiB (lent) fits; the next 40 KiB goes in part: cut, not a wait.
    tx.write_frame(&[1; 40_000]).unwrap();
    match tx.write_frame(&[2; 40_000]) {
        Err(Error::FrameCutShort { written, len }) => {
            assert!(written > 0 && written < len, "{written} of {len}");
        }
        other => panic!("expected FrameCutShort, got {other:?}"),
    }
    drop(tx);
    // A full pipe: nothing of the frame goes in, and the writer stays usable.
    let (r2, w2) = pipe().unwrap();
    w2.set_nonblocking(true).unwrap();
    (&w2).write_all(&[0; 65_536]).unwrap();
    let mut tx = FramedWriter::new(&w2).grow_pipe(false);
    assert!(matches!(
        tx.write_frame(&[3; 40_000]),
        Err(Error::WouldBlock)
    ));
    let mut drain = vec![0; 65_536];
    std::io::Read::read_exact(&mut &r2, &mut drain).unwrap();
    tx.write_frame(&[3; 40_000]).unwrap();
    let mut rx = FramedReader::new(&r2);
    assert_eq!(rx.read_frame().unwrap(), Some(vec![3; 40_000]));
    drop(r);
}
