//! The async (tokio) ends, across real processes, on a current-thread runtime (where a blocking
//! call would stall every task), every await bounded by a timeout; and cancellation: futures
//! dropped at chosen moments lose no byte and leave no half frame.
#![cfg(feature = "tokio")]

use std::future::Future;
use std::io::{ErrorKind, Read, Write};
use std::time::Duration;

use ipc_pipe::{
    AsyncDuplex, AsyncFramedReader, AsyncFramedWriter, AsyncPipeReader, AsyncPipeWriter, ChildFds,
    Error, FramedReader, FramedWriter, PipeReader, SigpipePolicy, async_pipe, pipe, sigpipe,
};
use ipc_testkit::{Watchdog, child, fnv1a64, role, test_path};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{LIMIT, payload, spawn};

/// The bound on every await.
const WAIT: Duration = Duration::from_secs(30);

/// A current-thread runtime: one thread for every task, so a blocking call stalls them all.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// `fut`, or a panic after [`WAIT`].
async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: still waiting after {WAIT:?}"),
    }
}

#[test]
fn async_ends_move_sixteen_mib_between_processes_intact() {
    const TOTAL: usize = 16 << 20;
    if role().is_some() {
        // Child: writes the stream through an AsyncPipeWriter in pieces of varying size.
        runtime().block_on(async {
            let mut w = AsyncPipeWriter::new(crate::inherited_writer(3)).unwrap();
            let data = payload(0xa51c, TOTAL);
            let mut rng = ipc_testkit::SplitMix64::new(3);
            let mut at = 0;
            while at < TOTAL {
                let n = (rng.range(1, 200_000) as usize).min(TOTAL - at);
                within("write_all", w.write_all(&data[at..at + n]))
                    .await
                    .unwrap();
                at += n;
            }
        });
        return;
    }
    let _wd = Watchdog::new("async 16 MiB", LIMIT);
    let (r, w) = pipe().unwrap();
    let mut cmd = child(
        &test_path!(async_ends_move_sixteen_mib_between_processes_intact),
        "writer",
    );
    ChildFds::new().fd_at(3, w).apply(&mut cmd).unwrap();
    let p = spawn(cmd);
    let got = runtime().block_on(async {
        let mut r = AsyncPipeReader::new(r).unwrap();
        let mut got = Vec::with_capacity(TOTAL);
        within("read_to_end", r.read_to_end(&mut got))
            .await
            .unwrap();
        got
    });
    p.expect_success(LIMIT);
    assert_eq!(got.len(), TOTAL);
    assert_eq!(fnv1a64(&got), fnv1a64(&payload(0xa51c, TOTAL)));
}

#[test]
fn a_waiting_reader_does_not_stall_a_current_thread_runtime() {
    if role().is_some() {
        // Child (the parent bounds it): the writer is a task on the same thread, which can
        // only run if the reader's wait gives the thread back. A blocking read would hang here.
        runtime().block_on(async {
            let (r, w) = pipe().unwrap();
            assert!(!r.is_nonblocking().unwrap());
            let r = AsyncPipeReader::new(r).unwrap();
            let w = AsyncPipeWriter::new(w).unwrap();
            let writer = tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                w.write(b"late").await.unwrap();
                w
            });
            let mut buf = [0; 16];
            let n = within("read", r.read(&mut buf)).await.unwrap();
            assert_eq!(&buf[..n], b"late");
            assert!(matches!(
                r.try_read(&mut buf),
                Err(e) if e.kind() == ErrorKind::WouldBlock
            ));
            let w = within("writer task", writer).await.unwrap();
            // Given back as they were: blocking again.
            let r = r.into_inner().unwrap();
            assert!(!r.is_nonblocking().unwrap());
            assert!(!w.into_inner().unwrap().is_nonblocking().unwrap());
        });
        return;
    }
    let _wd = Watchdog::new("no stall", LIMIT);
    let cmd = child(
        &test_path!(a_waiting_reader_does_not_stall_a_current_thread_runtime),
        "stall",
    );
    let mut p = spawn(cmd);
    let status = p.wait_timeout(Duration::from_secs(30));
    assert!(
        matches!(&status, Ok(s) if s.success()),
        "the runtime stalled or the child failed: {status:?}"
    );
}

#[test]
fn outside_a_runtime_an_async_end_is_an_error_not_a_panic() {
    let (r, w) = pipe().unwrap();
    let err = AsyncPipeReader::new(r).unwrap_err();
    assert!(matches!(&err, Error::Io(_)), "{err:?}");
    assert!(err.to_string().contains("tokio runtime"), "{err}");
    assert!(AsyncPipeWriter::new(w).is_err());
    assert!(async_pipe().is_err());
}

#[test]
fn a_writer_without_reader_gets_broken_pipe_and_suppress_protects_a_default_host() {
    if let Some(role) = role() {
        // Child: SIGPIPE at its default action, as in a C host.
        assert_eq!(
            sigpipe::restore_default().unwrap(),
            sigpipe::Disposition::Ignore
        );
        runtime().block_on(async {
            let (r, w) = pipe().unwrap();
            let mut w = AsyncPipeWriter::new(w).unwrap();
            if role == "suppress" {
                w.set_sigpipe_policy(SigpipePolicy::Suppress);
            }
            drop(r);
            let e = within("write", w.write(b"x")).await.unwrap_err();
            // Only the suppressing writer gets here.
            assert_eq!(e.kind(), ErrorKind::BrokenPipe);
            let mut tx = AsyncFramedWriter::new(w);
            let e = within("send", tx.send(&[7; 100_000])).await.unwrap_err();
            assert!(matches!(e, Error::NoReader), "{e:?}");
        });
        return;
    }
    let _wd = Watchdog::new("async SIGPIPE", LIMIT);
    // In this (Rust) process SIGPIPE is ignored: a plain error. (A process that another test
    // spawns at this moment holds a copy of the read end until its exec: then a byte still
    // goes in. Write again; the copy closes at the exec.)
    runtime().block_on(async {
        let (r, w) = async_pipe().unwrap();
        drop(r);
        for tries in 0.. {
            match within("write", w.write(b"x")).await {
                Err(e) => {
                    assert_eq!(e.kind(), ErrorKind::BrokenPipe);
                    break;
                }
                Ok(_) => assert!(tries < 1000, "a write with no reader keeps succeeding"),
            }
        }
    });
    let test =
        test_path!(a_writer_without_reader_gets_broken_pipe_and_suppress_protects_a_default_host);
    let status = spawn(child(&test, "suppress")).wait_timeout(LIMIT).unwrap();
    assert!(status.success(), "suppress: {status}");
    // What a host with SIGPIPE at its default gets from an Inherit writer: death by SIGPIPE.
    let status = spawn(child(&test, "inherit")).wait_timeout(LIMIT).unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGPIPE), "inherit: {status}");
}

/// The frames of the cancellation tests: `i` is `payload(0x7a00 + i, frame_len(i))`.
fn frame_len(i: u64) -> usize {
    [0, 1, 10, 4096, 5000, 70_000, 200_001, 1 << 20][(i % 8) as usize]
}

fn frame(i: u64) -> Vec<u8> {
    payload(0x7a00 + i, frame_len(i))
}

#[test]
fn dropped_send_futures_leave_no_half_frame_and_every_frame_arrives_once() {
    const FRAMES: u64 = 40;
    if role().is_some() {
        // Child: reads every frame with the blocking reader, in order, each exactly once.
        let r = crate::inherited_reader(3);
        let mut rx = FramedReader::new(&r).max_frame(2 << 20);
        let mut buf = Vec::new();
        for i in 0..FRAMES {
            let n = rx.read_frame_into(&mut buf).unwrap();
            assert_eq!(n, Some(frame_len(i)), "frame {i}");
            assert!(buf == frame(i), "frame {i} changed");
        }
        assert_eq!(rx.read_frame().unwrap(), None, "a frame too many");
        return;
    }
    let _wd = Watchdog::new("dropped sends", LIMIT);
    let (r, w) = pipe().unwrap();
    let mut cmd = child(
        &test_path!(dropped_send_futures_leave_no_half_frame_and_every_frame_arrives_once),
        "reader",
    );
    ChildFds::new().fd_at(3, r).apply(&mut cmd).unwrap();
    let p = spawn(cmd);
    let (mid_frame, untouched) = runtime().block_on(async {
        let mut tx = AsyncFramedWriter::new(AsyncPipeWriter::new(w).unwrap()).max_frame(2 << 20);
        let (mut mid_frame, mut untouched) = (0, 0);
        for i in 0..FRAMES {
            let f = frame(i);
            for attempt in 0.. {
                let before = tx.frames_committed();
                if i % 3 == 0 && attempt == 0 {
                    // Poll the send once by hand, then drop it: a 64 KiB pipe takes part of a
                    // large frame at most.
                    let mut send = tx.send(&f);
                    let done = tokio::select! {
                        biased;
                        r = &mut send => { r.unwrap(); true }
                        () = std::future::ready(()) => false,
                    };
                    drop(send);
                    if done {
                        break;
                    }
                } else {
                    // Race the send against a short timer: it often loses in the middle. (This
                    // awaits, so the runtime learns when the pipe has room again.)
                    tokio::select! {
                        r = tx.send(&f) => { r.unwrap(); break; }
                        () = tokio::time::sleep(Duration::from_micros(300)) => {}
                    }
                }
                if tx.frames_committed() > before {
                    mid_frame += 1; // dropped in the middle: committed, its rest is pending
                    break;
                }
                untouched += 1; // dropped before any of it went out: send it again
            }
        }
        within("flush", tx.flush()).await.unwrap();
        assert_eq!(tx.pending(), 0);
        assert_eq!(tx.frames_committed(), FRAMES);
        (mid_frame, untouched)
    });
    p.expect_success(LIMIT);
    assert!(
        mid_frame > 0,
        "no send was dropped in the middle of its frame"
    );
    println!("{mid_frame} sends dropped mid-frame, {untouched} before their frame began");
}

#[test]
fn dropped_recv_futures_lose_no_byte_and_every_frame_arrives_once() {
    const FRAMES: u64 = 24;
    if role().is_some() {
        // Child: writes the frames in small pieces, one piece per "go" byte from the parent.
        let w = crate::inherited_writer(3);
        let go = crate::inherited_reader(4);
        let mut stream = Vec::new();
        let mut tx = FramedWriter::from_write(&mut stream).max_frame(2 << 20);
        for i in 0..FRAMES {
            tx.write_frame(&frame(i)).unwrap();
        }
        let mut rng = ipc_testkit::SplitMix64::new(0x90);
        let mut at = 0;
        let mut byte = [0; 1];
        while at < stream.len() {
            if (&go).read(&mut byte).unwrap() == 0 {
                panic!("the parent went away");
            }
            let n = [1, 3, 700, 4096, 20_000, 90_000][rng.range(0, 5) as usize];
            let n = n.min(stream.len() - at);
            (&w).write_all(&stream[at..at + n]).unwrap();
            at += n;
        }
        return;
    }
    let _wd = Watchdog::new("dropped recvs", LIMIT);
    let (r, w) = pipe().unwrap();
    let (go_r, go_w) = pipe().unwrap();
    let mut cmd = child(
        &test_path!(dropped_recv_futures_lose_no_byte_and_every_frame_arrives_once),
        "writer",
    );
    ChildFds::new()
        .fd_at(3, w)
        .fd_at(4, go_r)
        .apply(&mut cmd)
        .unwrap();
    let p = spawn(cmd);
    let cancelled = runtime().block_on(async {
        let mut rx = AsyncFramedReader::new(AsyncPipeReader::new(r).unwrap()).max_frame(2 << 20);
        let go = AsyncPipeWriter::new(go_w).unwrap();
        let mut buf = Vec::new();
        let mut next = 0;
        let mut cancelled = 0u64;
        let mut pieces = 0u64;
        while next < FRAMES {
            tokio::select! {
                got = rx.recv_into(&mut buf) => {
                    let n = got.unwrap();
                    assert_eq!(n, Some(frame_len(next)), "frame {next}");
                    assert_eq!(fnv1a64(&buf), fnv1a64(&frame(next)), "frame {next} changed");
                    next += 1;
                }
                // Waiting for bytes that only come after the next "go": the receive is
                // dropped (often in the middle of a frame), and the piece is asked for.
                () = tokio::time::sleep(Duration::from_millis(1)) => {
                    cancelled += 1;
                    pieces += 1;
                    within("go", go.write(b"g")).await.unwrap();
                }
            }
            assert!(pieces < 100_000, "runaway");
        }
        drop(go); // the child may be waiting for one more go: end of file lets it finish
        let end = within("end", rx.recv()).await.unwrap();
        assert_eq!(end, None, "a clean end after the last frame");
        cancelled
    });
    p.expect_success(LIMIT);
    assert!(
        cancelled > FRAMES,
        "only {cancelled} receives were dropped: frames did not arrive in pieces"
    );
}

#[test]
fn an_async_duplex_exchanges_frames_with_a_child() {
    const REQUESTS: u64 = 200;
    if role().is_some() {
        // Child: the blocking side, which answers each frame with its checksum.
        #[allow(unsafe_code)]
        // SAFETY: the parent placed the duplex's ends at 3 and 4; nothing else here owns them.
        let d = unsafe { ipc_pipe::Duplex::from_inherited(3, 4) }.unwrap();
        let (r, w) = d.into_parts();
        let mut rx = FramedReader::new(&r);
        let mut tx = FramedWriter::new(&w);
        while let Some(f) = rx.read_frame().unwrap() {
            tx.write_frame(&fnv1a64(&f).to_le_bytes()).unwrap();
        }
        return;
    }
    let _wd = Watchdog::new("async duplex", LIMIT);
    let (ours, theirs) = ipc_pipe::duplex().unwrap();
    let mut cmd = child(
        &test_path!(an_async_duplex_exchanges_frames_with_a_child),
        "echo",
    );
    theirs.attach_at(&mut cmd, 3, 4).unwrap();
    let p = spawn(cmd);
    runtime().block_on(async {
        let (r, w) = AsyncDuplex::new(ours).unwrap().into_split();
        let mut tx = AsyncFramedWriter::new(w);
        let mut rx = AsyncFramedReader::new(r);
        for i in 0..REQUESTS {
            let request = payload(i, (i as usize * 7919) % 100_000);
            within("send", tx.send(&request)).await.unwrap();
            let reply = within("recv", rx.recv()).await.unwrap().unwrap();
            assert_eq!(reply, fnv1a64(&request).to_le_bytes(), "reply {i}");
        }
    });
    p.expect_success(LIMIT);
}

#[test]
fn async_readers_refuse_a_hostile_length_before_allocating() {
    runtime().block_on(async {
        let (r, w) = async_pipe().unwrap();
        w.write(&u32::MAX.to_le_bytes()).await.unwrap();
        let mut rx = AsyncFramedReader::new(r).max_frame(1 << 20);
        let mut buf = Vec::new();
        for _ in 0..2 {
            match within("recv", rx.recv_into(&mut buf)).await {
                Err(Error::MessageTooLarge { len, max }) => {
                    assert_eq!((len, max), (u64::from(u32::MAX), 1 << 20));
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(buf.capacity(), 0);
        // A frame above the writer's maximum is refused before anything is written.
        let (r, w) = async_pipe().unwrap();
        let mut tx = AsyncFramedWriter::new(w).max_frame(10);
        assert!(matches!(
            tx.send(&[0; 11]).await,
            Err(Error::MessageTooLarge { len: 11, max: 10 })
        ));
        drop(tx);
        let r: PipeReader = r.into_inner().unwrap();
        assert_eq!(r.available().unwrap(), 0);
    });
}
