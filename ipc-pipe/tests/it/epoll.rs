//! The runtime-agnostic recipe (the README's): a plain `epoll` loop over non-blocking pipe ends,
//! driven by `AsFd` and the `try_` calls, across processes, data checksummed.

use std::io::{Read, Write};

use ipc_pipe::{ChildFds, Error, FramedReader, FramedWriter, pipe};
use ipc_testkit::{Watchdog, child, fnv1a64, role, test_path};
use rustix::event::Timespec;
use rustix::event::epoll::{self, CreateFlags, Event, EventData, EventFlags};

use crate::{LIMIT, payload, spawn};

/// The longest any one `epoll_wait` may wait before the test fails.
const TICK: Timespec = Timespec {
    tv_sec: 20,
    tv_nsec: 0,
};

/// Waits for events on `ep`; panics if none comes within [`TICK`].
fn wait(ep: &std::os::fd::OwnedFd, events: &mut Vec<Event>) {
    events.clear();
    loop {
        match epoll::wait(ep, rustix::buffer::spare_capacity(events), Some(&TICK)) {
            Ok(0) => panic!("no event within {TICK:?}"),
            Ok(_) => return,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => panic!("epoll_wait: {e}"),
        }
    }
}

const DOWN: u64 = 1;
const UP: u64 = 2;

#[test]
fn an_epoll_loop_pushes_and_pulls_eight_mib_through_a_child_with_try_calls() {
    const TOTAL: usize = 8 << 20;
    if role().is_some() {
        // Child: a blocking `cat` from fd 3 to fd 4.
        let mut r = crate::inherited_reader(3);
        let mut w = crate::inherited_writer(4);
        let mut buf = vec![0; 100_000];
        loop {
            let n = r.read(&mut buf).unwrap();
            if n == 0 {
                return;
            }
            w.write_all(&buf[..n]).unwrap();
        }
    }
    let _wd = Watchdog::new("epoll loop", LIMIT);
    let (down_r, down_w) = pipe().unwrap();
    let (up_r, up_w) = pipe().unwrap();
    let mut cmd = child(
        &test_path!(an_epoll_loop_pushes_and_pulls_eight_mib_through_a_child_with_try_calls),
        "cat",
    );
    ChildFds::new()
        .fd_at(3, down_r)
        .fd_at(4, up_w)
        .apply(&mut cmd)
        .unwrap();
    let p = spawn(cmd);
    // The recipe: non-blocking ends, registered by `as_fd()`, moved with `try_` calls.
    down_w.set_nonblocking(true).unwrap();
    up_r.set_nonblocking(true).unwrap();
    let ep = epoll::create(CreateFlags::CLOEXEC).unwrap();
    epoll::add(&ep, &down_w, EventData::new_u64(DOWN), EventFlags::OUT).unwrap();
    epoll::add(&ep, &up_r, EventData::new_u64(UP), EventFlags::IN).unwrap();
    let data = payload(0xe9011, TOTAL);
    let mut down = Some(down_w);
    let (mut sent, mut got) = (0, Vec::with_capacity(TOTAL));
    let mut buf = vec![0; 65_536];
    let (mut would_block_out, mut would_block_in) = (0, 0);
    let mut events = Vec::with_capacity(4);
    loop {
        wait(&ep, &mut events);
        for ev in &events {
            match ev.data.u64() {
                DOWN => {
                    let w = down.as_ref().expect("no events after removal");
                    loop {
                        match w.try_write(&data[sent..]) {
                            Ok(n) => sent += n,
                            Err(Error::WouldBlock) => {
                                would_block_out += 1;
                                break;
                            }
                            Err(e) => panic!("try_write: {e:?}"),
                        }
                        if sent == TOTAL {
                            // All sent: close our end so that the child sees end of file.
                            let w = down.take().unwrap();
                            epoll::delete(&ep, &w).unwrap();
                            break;
                        }
                    }
                }
                UP => loop {
                    match up_r.try_read(&mut buf) {
                        Ok(0) => {
                            // The child closed its end: done.
                            p.expect_success(LIMIT);
                            assert_eq!(sent, TOTAL);
                            assert_eq!(got.len(), TOTAL);
                            assert_eq!(fnv1a64(&got), fnv1a64(&data), "the echo changed");
                            assert!(would_block_out > 0 && would_block_in > 0);
                            return;
                        }
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                        Err(Error::WouldBlock) => {
                            would_block_in += 1;
                            break;
                        }
                        Err(e) => panic!("try_read: {e:?}"),
                    }
                },
                other => panic!("unknown event {other}"),
            }
        }
    }
}

#[test]
fn an_epoll_loop_reads_frames_with_try_read_frame_into() {
    const FRAMES: u64 = 60;
    let len = |i: u64| [0, 3, 4096, 40_000, 150_001][(i % 5) as usize];
    if role().is_some() {
        let w = crate::inherited_writer(3);
        let mut tx = FramedWriter::new(&w);
        for i in 0..FRAMES {
            tx.write_frame(&payload(0xf4 + i, len(i))).unwrap();
        }
        return;
    }
    let _wd = Watchdog::new("epoll frames", LIMIT);
    let (r, w) = pipe().unwrap();
    let mut cmd = child(
        &test_path!(an_epoll_loop_reads_frames_with_try_read_frame_into),
        "frames",
    );
    ChildFds::new().fd_at(3, w).apply(&mut cmd).unwrap();
    let p = spawn(cmd);
    r.set_nonblocking(true).unwrap();
    let ep = epoll::create(CreateFlags::CLOEXEC).unwrap();
    epoll::add(&ep, &r, EventData::new_u64(UP), EventFlags::IN).unwrap();
    let mut rx = FramedReader::new(&r);
    let (mut next, mut partial) = (0, 0);
    let mut buf = Vec::new();
    let mut events = Vec::with_capacity(4);
    loop {
        wait(&ep, &mut events);
        loop {
            match rx.try_read_frame_into(&mut buf) {
                Ok(Some(n)) => {
                    assert_eq!(n, len(next), "frame {next}");
                    assert_eq!(
                        fnv1a64(&buf),
                        fnv1a64(&payload(0xf4 + next, n)),
                        "frame {next}"
                    );
                    next += 1;
                }
                Ok(None) => {
                    assert_eq!(next, FRAMES, "frames lost");
                    p.expect_success(LIMIT);
                    println!("{partial} times a frame was not whole yet");
                    return;
                }
                Err(Error::WouldBlock) => {
                    partial += 1;
                    break;
                }
                Err(e) => panic!("frame {next}: {e:?}"),
            }
        }
    }
}

#[test]
fn an_epoll_loop_writes_frames_with_try_write_frame_and_try_flush() {
    const FRAMES: u64 = 60;
    let len = |i: u64| [0, 3, 4096, 40_000, 150_001][(i % 5) as usize];
    if role().is_some() {
        // Child: every frame, in order, exactly once.
        let r = crate::inherited_reader(3);
        let mut rx = FramedReader::new(&r);
        let mut buf = Vec::new();
        for i in 0..FRAMES {
            assert_eq!(
                rx.read_frame_into(&mut buf).unwrap(),
                Some(len(i)),
                "frame {i}"
            );
            assert!(buf == payload(0xf8 + i, len(i)), "frame {i} changed");
        }
        assert_eq!(rx.read_frame().unwrap(), None);
        return;
    }
    let _wd = Watchdog::new("epoll frame writer", LIMIT);
    // On a non-blocking end (the recipe), and on a blocking one (each write polled first;
    // large frames lent with vmsplice).
    for nonblocking in [true, false] {
        let (r, w) = pipe().unwrap();
        let mut cmd = child(
            &test_path!(an_epoll_loop_writes_frames_with_try_write_frame_and_try_flush),
            "reader",
        );
        ChildFds::new().fd_at(3, r).apply(&mut cmd).unwrap();
        let p = spawn(cmd);
        w.set_nonblocking(nonblocking).unwrap();
        let ep = epoll::create(CreateFlags::CLOEXEC).unwrap();
        epoll::add(&ep, &w, EventData::new_u64(DOWN), EventFlags::OUT).unwrap();
        let mut tx = FramedWriter::new(&w).grow_pipe(false);
        let frames: Vec<Vec<u8>> = (0..FRAMES).map(|i| payload(0xf8 + i, len(i))).collect();
        let (mut next, mut taken_in_part) = (0, 0);
        let mut events = Vec::with_capacity(4);
        while next < frames.len() || tx.pending() > 0 {
            wait(&ep, &mut events);
            if tx.pending() > 0 {
                match tx.try_flush() {
                    Ok(()) | Err(Error::WouldBlock) => {}
                    Err(e) => panic!("try_flush: {e:?}"),
                }
            }
            while next < frames.len() {
                match tx.try_write_frame(&frames[next]) {
                    Ok(()) => {
                        next += 1;
                        if tx.pending() > 0 {
                            taken_in_part += 1;
                            break;
                        }
                    }
                    Err(Error::WouldBlock) => break,
                    Err(e) => panic!("frame {next}: {e:?}"),
                }
            }
        }
        drop(tx);
        drop(w);
        p.expect_success(LIMIT);
        assert!(
            taken_in_part > 0,
            "no frame was taken in part (nonblocking: {nonblocking})"
        );
    }
}
