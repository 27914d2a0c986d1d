//! 64 MiB through vmsplice, splice and the fast copy, across processes, checksum equal.

use std::io::{Read, Write};

use ipc_pipe::{ChildFds, PipeReader, ZeroCopyWriter, pipe};
use ipc_testkit::{Watchdog, child, fnv1a64, role, test_path};

use crate::{LIMIT, payload, spawn};

const TOTAL: usize = 64 << 20;
const SEED: u64 = 0x5eed;

/// The checksum of the 64 MiB stream every test sends.
fn expected() -> (Vec<u8>, u64) {
    let data = payload(SEED, TOTAL);
    let sum = fnv1a64(&data);
    (data, sum)
}

/// Starts this test's child `role` with the write end of a new pipe at fd 3; returns the
/// reader and the child.
fn child_writer(test: &str, role: &str) -> (PipeReader, ipc_testkit::Proc) {
    let (r, w) = pipe().unwrap();
    let mut cmd = child(test, role);
    ChildFds::new().fd_at(3, w).apply(&mut cmd).unwrap();
    (r, spawn(cmd))
}

#[test]
fn sixty_four_mib_through_vmsplice_arrive_intact() {
    if role().is_some() {
        let w = crate::inherited_writer(3);
        w.set_capacity(1 << 20).unwrap();
        let data = payload(SEED, TOTAL);
        let mut z = ZeroCopyWriter::new(&w).unwrap();
        // Pieces of varying size, filled in place: the ring is reused many times over.
        let mut at = 0;
        let mut i = 0usize;
        while at < TOTAL {
            let len = [4096, 65536, 1 << 20, 1000, 333_333][i % 5].min(TOTAL - at);
            z.send_with(len, |piece| piece.copy_from_slice(&data[at..at + len]))
                .unwrap();
            at += len;
            i += 1;
        }
        return;
    }
    let _wd = Watchdog::new("vmsplice 64 MiB", LIMIT);
    let (_, sum) = expected();
    let (mut r, p) = child_writer(
        &test_path!(sixty_four_mib_through_vmsplice_arrive_intact),
        "v",
    );
    let mut got = Vec::with_capacity(TOTAL);
    r.read_to_end(&mut got).unwrap();
    p.expect_success(LIMIT);
    assert_eq!(got.len(), TOTAL);
    assert_eq!(fnv1a64(&got), sum);
}

#[test]
fn sixty_four_mib_through_splice_and_tee_arrive_intact() {
    if role().is_some() {
        let mut w = crate::inherited_writer(3);
        w.write_all(&payload(SEED, TOTAL)).unwrap();
        return;
    }
    let _wd = Watchdog::new("splice 64 MiB", LIMIT);
    let (_, sum) = expected();
    let (r, p) = child_writer(
        &test_path!(sixty_four_mib_through_splice_and_tee_arrive_intact),
        "s",
    );
    // child -> r --splice--> (w2 -> r2) --read--> a; and a tee copy into (w3 -> r3) --read--> b
    let (r2, w2) = pipe().unwrap();
    let (r3, w3) = pipe().unwrap();
    let reader = |mut rx: PipeReader| {
        std::thread::spawn(move || {
            let mut v = Vec::with_capacity(TOTAL);
            rx.read_to_end(&mut v).unwrap();
            v
        })
    };
    let (a, b) = (reader(r2), reader(r3));
    let mut moved = 0;
    loop {
        // Duplicate what is at the head of r into w3, then move exactly that much to w2.
        let n = ipc_pipe::tee(&r, &w3, 1 << 20).unwrap();
        if n == 0 {
            break;
        }
        let mut left = n;
        while left > 0 {
            let m = ipc_pipe::splice(&r, &w2, left).unwrap();
            assert!(m > 0);
            left -= m;
        }
        moved += n;
    }
    drop((w2, w3));
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    p.expect_success(LIMIT);
    assert_eq!(moved, TOTAL);
    assert_eq!(fnv1a64(&a), sum);
    assert_eq!(fnv1a64(&b), sum);
}

#[test]
fn sixty_four_mib_through_the_fast_copy_arrive_intact() {
    if role().is_some() {
        // Child: copies a file into the pipe at fd 3 (file -> pipe: splice).
        let w = crate::inherited_writer(3);
        let path = std::env::var("SRC").unwrap();
        let f = std::fs::File::open(path).unwrap();
        assert_eq!(ipc_pipe::copy(&f, &w, None).unwrap(), TOTAL as u64);
        return;
    }
    let _wd = Watchdog::new("copy 64 MiB", LIMIT);
    let (data, sum) = expected();
    let dir = std::env::temp_dir();
    let src = dir.join(ipc_testkit::unique("zc-src"));
    let dst = dir.join(ipc_testkit::unique("zc-dst"));
    std::fs::write(&src, &data).unwrap();
    drop(data);
    let (r, w) = pipe().unwrap();
    let mut cmd = child(
        &test_path!(sixty_four_mib_through_the_fast_copy_arrive_intact),
        "c",
    );
    cmd.env("SRC", &src);
    ChildFds::new().fd_at(3, w).apply(&mut cmd).unwrap();
    let p = spawn(cmd);
    // Parent: pipe -> file, also by splice.
    let out = std::fs::File::create(&dst).unwrap();
    let n = ipc_pipe::copy(&r, &out, None);
    let got = std::fs::read(&dst);
    let _ = std::fs::remove_file(&src);
    let _ = std::fs::remove_file(&dst);
    p.expect_success(LIMIT);
    assert_eq!(n.unwrap(), TOTAL as u64);
    assert_eq!(fnv1a64(&got.unwrap()), sum);
}

#[test]
fn zero_copy_pieces_stay_intact_when_the_pipe_grows_under_the_writer() {
    const PIECE: usize = 32 * 1024;
    let piece = |i: u64| payload(0x2c00 + i, PIECE);
    let (mut r, w) = pipe().unwrap();
    assert_eq!(w.capacity().unwrap(), 2 * PIECE);
    let mut z = ZeroCopyWriter::new(&w).unwrap();
    let mut read = |n: usize| {
        let mut got = vec![0; n];
        r.read_exact(&mut got).unwrap();
        got
    };
    // Pieces 1 and 2 fill the pipe and are read; 3 and 4 fill it again; 3 is read.
    z.send(&piece(1)).unwrap();
    z.send(&piece(2)).unwrap();
    assert!(read(2 * PIECE) == [piece(1), piece(2)].concat());
    z.send(&piece(3)).unwrap();
    z.send(&piece(4)).unwrap();
    assert!(read(PIECE) == piece(3));
    // Piece 5 wraps around the ring; then the pipe grows (any holder of an end may do this),
    // so it can now hold pieces 4 to 8 at once: piece 4's pages are still in the pipe when
    // the writer reaches them again.
    z.send(&piece(5)).unwrap();
    w.set_capacity(1 << 20).unwrap();
    for i in 6..=8 {
        z.send(&piece(i)).unwrap();
    }
    drop(z);
    for i in 4..=8 {
        assert!(
            read(PIECE) == piece(i),
            "piece {i} was overwritten in the pipe"
        );
    }
}

#[test]
fn bounded_zero_copy_calls_time_out_with_nothing_lost_and_resume() {
    use ipc_pipe::{Error, splice_timeout, tee_timeout, try_splice, try_tee};
    use std::time::Duration;
    let short = Duration::from_millis(5);
    let (r1, mut w1) = pipe().unwrap();
    let (mut r2, mut w2) = pipe().unwrap();
    // Nothing to move: a timeout, and the non-waiting forms say WouldBlock.
    assert!(matches!(
        splice_timeout(&r1, &w2, 4096, short),
        Err(Error::TimedOut { written: 0 })
    ));
    assert!(matches!(try_splice(&r1, &w2, 4096), Err(Error::WouldBlock)));
    assert!(matches!(try_tee(&r1, &w2, 4096), Err(Error::WouldBlock)));
    // Data, but no room at the other end: a timeout again, and the data stays where it was.
    let data = payload(0xb0, 1000);
    w1.write_all(&data).unwrap();
    w2.write_all(&vec![0; 65_536]).unwrap();
    assert!(matches!(
        splice_timeout(&r1, &w2, 4096, short),
        Err(Error::TimedOut { .. })
    ));
    assert!(matches!(
        tee_timeout(&r1, &w2, 4096, short),
        Err(Error::TimedOut { .. })
    ));
    assert_eq!(r1.available().unwrap(), 1000);
    // Room again: tee, then splice, the same bytes.
    let mut drain = vec![0; 65_536];
    r2.read_exact(&mut drain).unwrap();
    assert_eq!(tee_timeout(&r1, &w2, 4096, Duration::MAX).unwrap(), 1000);
    assert_eq!(
        splice_timeout(&r1, &w2, 4096, Duration::from_secs(5)).unwrap(),
        1000
    );
    let mut got = vec![0; 2000];
    r2.read_exact(&mut got).unwrap();
    assert!(got == [&data[..], &data[..]].concat());
    // The reader gone: an error, not a wait. (A process that another test spawns at this
    // moment holds a copy of every descriptor between its fork and its exec, the read end
    // too: then a byte still goes in. Try again; the copy closes at the exec.)
    drop(r2);
    w1.write_all(b"x").unwrap();
    for call in ["splice", "tee"] {
        let mut tries = 0;
        loop {
            let r = match call {
                "splice" => splice_timeout(&r1, &w2, 1, Duration::from_secs(10)),
                _ => tee_timeout(&r1, &w2, 1, Duration::from_secs(10)),
            };
            match r {
                Err(Error::NoReader) => break,
                Ok(1) if tries < 1000 => {
                    tries += 1;
                    if call == "splice" {
                        w1.write_all(b"x").unwrap();
                    }
                }
                other => panic!("{call} with no reader: {other:?}"),
            }
        }
    }
}

#[test]
fn a_zero_copy_piece_cut_by_its_deadline_resumes_where_it_stopped() {
    use ipc_pipe::Error;
    use std::time::Duration;
    let (r, w) = pipe().unwrap();
    let r = &r;
    let mut z = ZeroCopyWriter::new(&w).unwrap();
    let data = payload(0xcc, 3 * 40_000);
    let data = &data;
    let mut sent = 0;
    let mut cut = 0;
    // Nobody reads at first: pieces go in until one is cut by its deadline; then a reader
    // takes everything, and each piece resumes from what its timeout said.
    let reader = std::thread::scope(|s| {
        let mut started = None;
        while sent < data.len() {
            let piece = &data[sent..(sent + 40_000).min(data.len())];
            match z.send_timeout(piece, Duration::from_millis(10)) {
                Ok(()) => sent += piece.len(),
                Err(Error::TimedOut { written }) => {
                    assert!(written < piece.len());
                    sent += written;
                    cut += 1;
                    started.get_or_insert_with(|| {
                        s.spawn(move || {
                            let mut got = vec![0; data.len()];
                            let mut rd = r;
                            rd.read_exact(&mut got).unwrap();
                            got
                        })
                    });
                }
                Err(e) => panic!("{e:?}"),
            }
        }
        started.map(|t| t.join().unwrap())
    });
    assert!(cut > 0, "a piece was cut by its deadline");
    assert!(reader.unwrap() == *data, "the stream changed");
}

#[test]
fn copying_a_pipe_or_file_into_itself_to_the_end_is_refused_not_endless() {
    use ipc_pipe::Error;
    if role().is_some() {
        // Bounds for the old behaviour, which never ended: a file may not grow past 4 MiB.
        rustix::process::setrlimit(
            rustix::process::Resource::Fsize,
            rustix::process::Rlimit {
                current: Some(4 << 20),
                maximum: Some(4 << 20),
            },
        )
        .unwrap();
        let (r, mut w) = pipe().unwrap();
        w.write_all(b"round and round").unwrap();
        match ipc_pipe::copy(&r, &w, None) {
            Err(Error::InvalidDescriptor { reason, .. }) => assert!(reason.contains("itself")),
            other => panic!("a pipe into itself: {other:?}"),
        }
        assert_eq!(r.available().unwrap(), 15, "nothing moved");
        let path = std::env::temp_dir().join(ipc_testkit::unique("self-copy"));
        std::fs::write(&path, payload(1, 1000)).unwrap();
        let src = std::fs::File::open(&path).unwrap();
        let dst = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        let refused = ipc_pipe::copy(&src, &dst, None);
        // With a length the copy ends, into itself too.
        let copied = ipc_pipe::copy(&src, &dst, Some(1000));
        let len = std::fs::metadata(&path).unwrap().len();
        let _ = std::fs::remove_file(&path);
        assert!(
            matches!(refused, Err(Error::InvalidDescriptor { .. })),
            "a file into itself: {refused:?}"
        );
        assert_eq!(copied.unwrap(), 1000);
        assert_eq!(len, 2000);
        return;
    }
    let _wd = Watchdog::new("copy into itself", LIMIT);
    let cmd = child(
        &test_path!(copying_a_pipe_or_file_into_itself_to_the_end_is_refused_not_endless),
        "self",
    );
    let mut p = spawn(cmd);
    let status = p.wait_timeout(std::time::Duration::from_secs(20));
    assert!(
        matches!(&status, Ok(s) if s.success()),
        "the child hung or failed: {status:?}"
    );
}

/// Virtual memory of this process, from /proc/self/status.
fn vm_size() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kib * 1024
}

#[test]
fn a_peer_that_grows_the_pipe_huge_cannot_make_the_zero_copy_writer_allocate_it_twice() {
    if role().is_some() {
        let (mut r, w) = pipe().unwrap();
        let mut z = ZeroCopyWriter::new(&w).unwrap();
        // The peer (as root: beyond pipe-max-size) grows the pipe to 64 MiB.
        match rustix::pipe::fcntl_setpipe_size(&r, 64 << 20) {
            Ok(_) => {}
            Err(rustix::io::Errno::PERM) => {
                eprintln!("not privileged: a pipe cannot grow beyond pipe-max-size here");
                return;
            }
            Err(e) => panic!("{e}"),
        }
        // Not 128 MiB more of address space: a ring that size cannot be allocated now.
        let headroom = 48 << 20;
        let limit = vm_size() + headroom;
        rustix::process::setrlimit(
            rustix::process::Resource::As,
            rustix::process::Rlimit {
                current: Some(limit),
                maximum: Some(limit),
            },
        )
        .unwrap();
        // Enough pieces to wrap the first ring: each may look at the capacity again.
        let data = payload(0x61, 1 << 20);
        for piece in data.chunks(65_536) {
            z.send(piece).unwrap();
        }
        drop(z);
        let mut got = vec![0; data.len()];
        r.read_exact(&mut got).unwrap();
        assert!(got == data, "the stream changed");
        return;
    }
    let _wd = Watchdog::new("huge pipe", LIMIT);
    let cmd = child(
        &test_path!(
            a_peer_that_grows_the_pipe_huge_cannot_make_the_zero_copy_writer_allocate_it_twice
        ),
        "huge",
    );
    spawn(cmd).expect_success(LIMIT);
}

#[test]
fn a_zero_copy_writer_dropped_with_unread_data_unmaps_its_ring_and_the_reader_still_gets_the_data()
{
    const PIPES: u64 = 48;
    const PIECE: usize = 40_000;
    if role().is_some() {
        // In a child of its own: no other test's threads map or unmap memory meanwhile.
        let before = vm_size();
        let mut pipes = Vec::new();
        for i in 0..PIPES {
            let (r, w) = pipe().unwrap();
            let mut z = ZeroCopyWriter::new(&w).unwrap();
            z.send(&payload(0xd0 + i, PIECE)).unwrap();
            // Nobody has read: the pipe still refers to the ring's pages as the writer goes.
            drop(z);
            pipes.push((r, w));
        }
        let grown = vm_size().saturating_sub(before);
        // Each writer's ring is 128 KiB (twice a 64 KiB pipe): kept, 48 of them would be 6 MiB.
        assert!(
            grown < 1 << 20,
            "the address space grew by {grown} bytes: rings were kept"
        );
        // Scribble over whatever memory those rings were: new writers (whose rings may land at
        // the same addresses) and heap blocks of the same size, all filled with other bytes.
        let (_r2, w2) = pipe().unwrap();
        let mut others = Vec::new();
        for _ in 0..PIPES {
            let mut z = ZeroCopyWriter::new(&w2).unwrap();
            z.send_with(PIECE, |p| p.fill(0xee)).unwrap();
            others.push(vec![0xffu8; 128 << 10]);
            drop(z);
            let mut sink = vec![0; PIECE];
            (&_r2).read_exact(&mut sink).unwrap();
        }
        for (i, (mut r, _w)) in pipes.into_iter().enumerate() {
            let mut got = vec![0; PIECE];
            r.read_exact(&mut got).unwrap();
            assert!(
                got == payload(0xd0 + i as u64, PIECE),
                "pipe {i}: the reader saw memory reused after the writer was dropped"
            );
            assert_eq!(r.available().unwrap(), 0);
        }
        drop(others);
        return;
    }
    let _wd = Watchdog::new("dropped zero-copy writer", LIMIT);
    let cmd = child(
        &test_path!(
            a_zero_copy_writer_dropped_with_unread_data_unmaps_its_ring_and_the_reader_still_gets_the_data
        ),
        "drop",
    );
    spawn(cmd).expect_success(LIMIT);
}
