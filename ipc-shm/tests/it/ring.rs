//! The SPSC ring: 256 MiB across processes, a hostile writer, a peer that goes away, timeouts.
//!
//! Layout offsets the tests poke at (a hostile peer's view): the writer's position at 128 (its
//! line also holds the reader's sleep word at 136), the reader's at 256, data from 384; a record
//! is an 8-byte header (length; a tag derived from its position, `0x8000_0000 | (pos >> 3) &
//! 0x3fff_ffff`), then its payload.

/// The writer's published position.
const WRITER_POS: usize = 128;
/// The reader's published position.
const READER_POS: usize = 256;
/// Where the reader stores its position for pollers (every 16 records, and whenever it finds
/// the ring empty).
const PUBLISHED_POS: usize = 96;

use std::time::{Duration, Instant};

use ipc_shm::{Anon, Error, Ring, Shm, Wait};
use ipc_testkit::{Proc, SplitMix64, Watchdog, child, fnv1a64, posix_name, role, test_path};

const TOTAL: u64 = 256 << 20;
const POOL: usize = 128 << 10;
const MAX_PAYLOAD: usize = 64 << 10;
const RING_CAP: usize = 4 << 20;

fn pool() -> Vec<u8> {
    let mut p = vec![0; POOL];
    SplitMix64::new(0x5eed).fill(&mut p);
    p
}

/// Message `seq` of `len` payload bytes: [seq u64][fnv64 of payload u64][payload from the pool].
fn payload_start(seq: u64) -> usize {
    (seq as usize).wrapping_mul(4099) % (POOL - MAX_PAYLOAD)
}

#[test]
fn ring_carries_256_mib_between_processes_intact() {
    let seg_size = Ring::segment_size(RING_CAP).unwrap();
    if role().as_deref() == Some("writer") {
        let name = std::env::var("SHM_NAME").unwrap();
        let seg = Shm::open(&name, seg_size).unwrap();
        let mut w = Ring::open_timeout(seg, Duration::from_secs(5))
            .unwrap()
            .into_writer()
            .unwrap();
        let pool = pool();
        let mut rng = SplitMix64::new(42);
        let (mut sent, mut seq) = (0u64, 0u64);
        let mut msg = vec![0u8; 16 + MAX_PAYLOAD];
        while sent < TOTAL {
            let len = (rng.range(1, MAX_PAYLOAD as u64)).min(TOTAL - sent) as usize;
            let start = payload_start(seq);
            let body = &pool[start..start + len];
            msg[..8].copy_from_slice(&seq.to_le_bytes());
            msg[8..16].copy_from_slice(&fnv1a64(body).to_le_bytes());
            msg[16..16 + len].copy_from_slice(body);
            w.send(&msg[..16 + len]).unwrap();
            sent += len as u64;
            seq += 1;
        }
        return; // dropping the writer closes its side
    }
    let _wd = Watchdog::new("256 MiB", Duration::from_secs(240));
    let name = posix_name("ring");
    let seg = Shm::create(&name, seg_size).unwrap();
    let mut r = Ring::create(seg).unwrap().into_reader().unwrap();
    assert_eq!(r.max_message(), RING_CAP - 72);
    let mut c = child(
        &test_path!(ring_carries_256_mib_between_processes_intact),
        "writer",
    );
    c.env("SHM_NAME", &name);
    let proc = Proc::spawn(&mut c).unwrap();
    let pool = pool();
    let mut buf = vec![0u8; 16 + MAX_PAYLOAD];
    let (mut got, mut seq) = (0u64, 0u64);
    let t0 = Instant::now();
    loop {
        let n = match r.recv(&mut buf) {
            Ok(n) => n,
            Err(Error::PeerGone) => break,
            Err(e) => panic!("recv after {got} bytes: {e}"),
        };
        assert!(n > 16);
        let msg_seq = u64::from_le_bytes(buf[..8].try_into().unwrap());
        let sum = u64::from_le_bytes(buf[8..16].try_into().unwrap());
        assert_eq!(msg_seq, seq, "messages in order, none lost");
        let body = &buf[16..n];
        assert_eq!(fnv1a64(body), sum, "checksum of message {seq}");
        let start = payload_start(seq);
        assert_eq!(
            body,
            &pool[start..start + body.len()],
            "content of message {seq}"
        );
        got += body.len() as u64;
        seq += 1;
    }
    let secs = t0.elapsed().as_secs_f64();
    proc.expect_success(Duration::from_secs(60));
    assert_eq!(got, TOTAL, "exact total");
    eprintln!("256 MiB in {seq} messages, {secs:.2} s (debug build, checksums on both sides)");
}

#[test]
fn a_hostile_writer_cannot_crash_the_reader_or_push_it_out_of_bounds() {
    const CAP: usize = 1 << 16;
    const DATA: usize = 384;
    let seg_size = Ring::segment_size(CAP).unwrap();
    if role().as_deref() == Some("hostile") {
        let name = std::env::var("SHM_NAME").unwrap();
        let seg = Shm::open(&name, seg_size).unwrap();
        let mut rng = SplitMix64::new(std::process::id() as u64);
        let end = Instant::now() + Duration::from_millis(2500);
        let mut junk = vec![0u8; 4096];
        // A record header at `pos`: its length and the tag the reader expects there.
        let header = |pos: u64, len: u64| {
            (u64::from((pos >> 3) as u32 & 0x3fff_ffff | 0x8000_0000) << 32) | len
        };
        while Instant::now() < end {
            // The reader's head: the later of its exact position and its position for pollers
            // (case 6 below can leave the exact one behind by a record for good; the one for
            // pollers is stored again whenever the reader finds the ring empty).
            let exact = seg.read::<u64>(READER_POS).unwrap();
            let published = seg.read::<u64>(PUBLISHED_POS).unwrap();
            let head = if (published.wrapping_sub(exact) as i64) > 0 {
                published
            } else {
                exact
            };
            let at = DATA + (head as usize % CAP);
            match rng.range(0, 11) {
                0 => seg.write::<u64>(WRITER_POS, &rng.next_u64()).unwrap(), // tail anywhere
                1 => {
                    // A committed header at the reader's head claiming a length past the end.
                    let len = rng.range(CAP as u64 - 15, u32::MAX as u64);
                    seg.write::<u64>(at, &header(head, len)).unwrap();
                    // Leave it there a moment (pacing, not synchronisation: the count of
                    // corrupt records the reader saw is only required to be non-zero).
                    let t = Instant::now();
                    while t.elapsed() < Duration::from_micros(200) {
                        std::hint::spin_loop();
                    }
                }
                2 => seg.write::<u64>(at, &rng.next_u64()).unwrap(), // a random header
                3 => {
                    rng.fill(&mut junk);
                    let at = DATA + rng.range(0, (CAP - junk.len()) as u64) as usize;
                    seg.write_bytes(at, &junk).unwrap();
                }
                4 => seg.write::<u64>(32, &rng.next_u64()).unwrap(), // capacity field
                5 => seg.write::<u64>(40, &rng.next_u64()).unwrap(), // pids
                6 => {
                    // The reader's published head: it keeps its own copy, so this only
                    // confuses the writer side. Put it back (as read just before, not as read
                    // at the top of the loop: a head the reader has moved on from, written
                    // back, would aim every later header at a slot the reader has left, and
                    // the reader would see nothing again) so the honest messages below land.
                    let now = seg.read::<u64>(READER_POS).unwrap();
                    seg.write::<u64>(READER_POS, &rng.next_u64()).unwrap();
                    seg.write::<u64>(READER_POS, &now).unwrap();
                }
                7 => {
                    // A committed header whose length wraps the payload around the ring's end.
                    let len = rng.range(0, CAP as u64 - 16);
                    seg.write::<u64>(at, &header(head, len)).unwrap();
                }
                _ => {
                    // A well-formed message of random length (its payload is whatever is there).
                    let len = rng.range(0, 512);
                    seg.write::<u64>(at, &header(head, len)).unwrap();
                }
            }
            // Wake a parked reader now and then.
            seg.write::<u32>(WRITER_POS + 8, &0).unwrap();
        }
        return;
    }
    let _wd = Watchdog::new("hostile", Duration::from_secs(60));
    let name = posix_name("hostile");
    let seg = Shm::create(&name, seg_size).unwrap();
    let mut r = Ring::create(seg).unwrap().into_reader().unwrap();
    let max = r.max_message();
    let mut c = child(
        &test_path!(a_hostile_writer_cannot_crash_the_reader_or_push_it_out_of_bounds),
        "hostile",
    );
    c.env("SHM_NAME", &name);
    let mut proc = Proc::spawn(&mut c).unwrap();
    let mut buf = vec![0u8; max];
    let (mut ok, mut corrupt, mut other) = (0u64, 0u64, 0u64);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut round = 0u64;
    while proc.inner().try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "hostile child did not finish");
        round += 1;
        let r = if !round.is_multiple_of(16) {
            r.try_recv(&mut buf)
        } else {
            r.recv_timeout(&mut buf, Duration::from_millis(1))
        };
        match r {
            Ok(n) => {
                assert!(
                    n <= max && n <= buf.len(),
                    "message of {n} bytes within bounds"
                );
                ok += 1;
            }
            Err(Error::Corrupt { .. }) => corrupt += 1,
            Err(Error::WouldBlock | Error::TimedOut | Error::PeerGone) => other += 1,
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }
    proc.expect_success(Duration::from_secs(5));
    eprintln!("hostile writer: {ok} messages within bounds, {corrupt} corrupt, {other} empty");
    assert!(corrupt > 0, "the hostile writer was noticed");
    assert!(ok > 0, "well-formed messages still get through");
}

#[test]
fn a_writer_that_exits_without_closing_is_noticed_after_its_messages() {
    let seg_size = Ring::segment_size(1 << 16).unwrap();
    if role().as_deref() == Some("quitter") {
        let seg = Shm::open(&std::env::var("SHM_NAME").unwrap(), seg_size).unwrap();
        let mut w = Ring::open(seg).unwrap().into_writer().unwrap();
        for i in 0u32..3 {
            w.send(&i.to_le_bytes()).unwrap();
        }
        std::process::exit(0); // no destructor runs: the ring is not closed
    }
    let _wd = Watchdog::new("quitter", Duration::from_secs(30));
    let name = posix_name("quit");
    let seg = Shm::create(&name, seg_size).unwrap();
    let mut r = Ring::create(seg).unwrap().into_reader().unwrap();
    let mut c = child(
        &test_path!(a_writer_that_exits_without_closing_is_noticed_after_its_messages),
        "quitter",
    );
    c.env("SHM_NAME", &name);
    Proc::spawn(&mut c)
        .unwrap()
        .expect_success(Duration::from_secs(15)); // exited and reaped
    let mut buf = [0u8; 16];
    for i in 0u32..3 {
        let n = r.recv_timeout(&mut buf, Duration::from_secs(5)).unwrap();
        assert_eq!(&buf[..n], &i.to_le_bytes());
    }
    assert!(!r.is_peer_alive());
    let t = Instant::now();
    assert!(matches!(r.recv(&mut buf), Err(Error::PeerGone)));
    assert!(t.elapsed() < Duration::from_secs(2));
    assert!(matches!(r.try_recv(&mut buf), Err(Error::PeerGone)));
}

#[test]
fn threads_wrap_around_a_small_ring_and_closing_is_seen_both_ways() {
    let _wd = Watchdog::new("threads", Duration::from_secs(60));
    let seg = Anon::new(Ring::segment_size(4096).unwrap()).unwrap();
    let mut w = Ring::create(&seg).unwrap().into_writer().unwrap();
    let mut r = Ring::open(&seg).unwrap().into_reader().unwrap();
    assert!(matches!(
        Ring::open(&seg).unwrap().into_writer(),
        Err(Error::RoleTaken)
    ));
    const N: u64 = 20_000;
    std::thread::scope(|s| {
        s.spawn(move || {
            let mut rng = SplitMix64::new(7);
            let mut msg = vec![0u8; 3000];
            for seq in 0..N {
                let len = rng.range(8, 3000) as usize;
                msg[..8].copy_from_slice(&seq.to_le_bytes());
                msg[8..len].fill(seq as u8);
                w.send(&msg[..len]).unwrap();
            }
        });
        let mut rng = SplitMix64::new(7);
        let mut buf = vec![0u8; 4096];
        for seq in 0..N {
            let n = r.recv(&mut buf).unwrap();
            assert_eq!(n as u64, rng.range(8, 3000));
            assert_eq!(u64::from_le_bytes(buf[..8].try_into().unwrap()), seq);
            assert!(buf[8..n].iter().all(|&b| b == seq as u8));
        }
        assert!(
            matches!(r.recv(&mut buf), Err(Error::PeerGone)),
            "writer dropped"
        );
    });
    // The writer role is free again once closed; a new writer keeps what is still unread.
    let mut w2 = Ring::open(&seg).unwrap().into_writer().unwrap();
    w2.send(&[9; 3000]).unwrap();
    drop(w2);
    let mut w2 = Ring::open(&seg).unwrap().into_writer().unwrap();
    assert!(
        matches!(w2.try_send(&[8; 3000]), Err(Error::WouldBlock)),
        "no overwrite"
    );
    let mut buf = vec![0u8; 4096];
    assert_eq!(
        r.recv_timeout(&mut buf, Duration::from_secs(5)).unwrap(),
        3000
    );
    assert!(buf[..3000].iter().all(|&b| b == 9));
    drop(r);
    assert!(
        matches!(w2.send(b"x"), Err(Error::PeerGone)),
        "reader dropped"
    );
}

#[test]
fn try_and_timeout_forms_and_size_errors() {
    let _wd = Watchdog::new("timeouts", Duration::from_secs(30));
    let seg = Anon::new(Ring::segment_size(256).unwrap()).unwrap();
    let mut w = Ring::create(&seg).unwrap().into_writer().unwrap();
    let mut r = Ring::open(&seg).unwrap().into_reader().unwrap();
    let mut buf = [0u8; 256];
    assert!(matches!(r.try_recv(&mut buf), Err(Error::WouldBlock)));
    for wait in [Wait::Park, Wait::SpinThenPark, Wait::Adaptive] {
        r.set_wait(wait);
        let t = Instant::now();
        assert!(matches!(
            r.recv_timeout(&mut buf, Duration::from_millis(30)),
            Err(Error::TimedOut)
        ));
        assert!(t.elapsed() >= Duration::from_millis(30));
    }
    assert!(matches!(
        w.send(&[0; 241]),
        Err(Error::MessageTooLarge { len: 241, max: 240 })
    ));
    w.send(&[1; 240]).unwrap();
    assert!(matches!(w.try_send(b"x"), Err(Error::WouldBlock)));
    assert!(matches!(
        w.send_timeout(b"x", Duration::from_millis(20)),
        Err(Error::TimedOut)
    ));
    assert!(matches!(
        r.try_recv(&mut buf[..10]),
        Err(Error::BufferTooSmall { needed: 240 })
    ));
    assert_eq!(r.recv_timeout(&mut buf, Duration::MAX).unwrap(), 240);
    w.send_timeout(b"", Duration::MAX).unwrap();
    assert_eq!(r.recv_vec().unwrap(), b"");
    assert!(matches!(
        Ring::create(Anon::new(400).unwrap()),
        Err(Error::InvalidSize { .. })
    ));
    let blank = Anon::new(4096).unwrap();
    assert!(matches!(Ring::open(&blank), Err(Error::NotPublished)));
    assert!(matches!(
        Ring::open_timeout(&blank, Duration::from_millis(10)),
        Err(Error::TimedOut)
    ));
}

#[test]
fn a_ring_in_a_sealed_memfd_passed_to_a_child() {
    use std::os::fd::{AsFd, OwnedFd};

    use ipc_shm::{Memfd, Seals, Size};
    const N: u32 = 10_000;
    if role().as_deref() == Some("memfd-reader") {
        let fd: OwnedFd = std::io::stdin().as_fd().try_clone_to_owned().unwrap();
        let seg = Memfd::from_fd(fd, Seals::SIZE, Size::AtMost(1 << 20)).unwrap(); // sealed: no SIGBUS
        let mut r = Ring::open(seg).unwrap().into_reader().unwrap();
        let mut buf = [0u8; 64];
        for i in 0..N {
            let n = r.recv_timeout(&mut buf, Duration::from_secs(10)).unwrap();
            assert_eq!(&buf[..n], &i.to_le_bytes().repeat(1 + i as usize % 8)[..]);
        }
        assert!(matches!(r.recv(&mut buf), Err(Error::PeerGone)));
        return;
    }
    let _wd = Watchdog::new("memfd ring", Duration::from_secs(30));
    let mut seg = Memfd::create("ring", Ring::segment_size(1 << 12).unwrap()).unwrap();
    seg.seal(Seals::SIZE).unwrap();
    let fd = seg.as_fd().try_clone_to_owned().unwrap();
    let mut w = Ring::create(seg).unwrap().into_writer().unwrap();
    let mut c = child(
        &test_path!(a_ring_in_a_sealed_memfd_passed_to_a_child),
        "memfd-reader",
    );
    c.stdin(std::process::Stdio::from(fd));
    let p = Proc::spawn(&mut c).unwrap();
    for i in 0..N {
        w.send_timeout(
            &i.to_le_bytes().repeat(1 + i as usize % 8),
            Duration::from_secs(10),
        )
        .unwrap();
    }
    drop(w);
    p.expect_success(Duration::from_secs(20));
}

#[test]
fn a_corrupt_reader_position_is_a_typed_error_for_the_writer() {
    let seg = Anon::new(Ring::segment_size(256).unwrap()).unwrap();
    let mut w = Ring::create(&seg).unwrap().into_writer().unwrap();
    w.send(&[1; 150]).unwrap();
    // The reader's published position jumps past the writer's.
    seg.write::<u64>(READER_POS, &10_000).unwrap();
    assert!(matches!(w.try_send(&[2; 100]), Err(Error::Corrupt { .. })));
    assert!(matches!(
        Ring::open(&seg).unwrap().into_writer(),
        Err(Error::Corrupt { .. } | Error::RoleTaken)
    ));
    seg.write::<u64>(READER_POS, &0).unwrap();
    assert!(matches!(w.try_send(&[2; 100]), Err(Error::WouldBlock)));
}

#[test]
fn adaptive_round_trips_with_both_sides_pinned_to_one_cpu() {
    let _wd = Watchdog::new("one cpu", Duration::from_secs(60));
    let mine = rustix::thread::sched_getaffinity(None).unwrap();
    let cpu = (0..rustix::thread::CpuSet::MAX_CPU)
        .find(|&c| mine.is_set(c))
        .unwrap();
    let mut one = rustix::thread::CpuSet::new();
    one.set(cpu);
    let size = Ring::segment_size(1 << 12).unwrap();
    let (a, b) = (Anon::new(size).unwrap(), Anon::new(size).unwrap());
    let (ping, pong) = (Ring::create(&a).unwrap(), Ring::create(&b).unwrap());
    const N: u32 = 5_000;
    let t = Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| {
            rustix::thread::sched_setaffinity(None, &one).unwrap(); // this thread only
            let mut rx = Ring::open(&a).unwrap().into_reader().unwrap();
            let mut tx = Ring::open(&b).unwrap().into_writer().unwrap();
            let mut buf = [0u8; 64];
            for _ in 0..N {
                let n = rx.recv(&mut buf).unwrap();
                tx.send(&buf[..n]).unwrap();
            }
        });
        rustix::thread::sched_setaffinity(None, &one).unwrap();
        let mut tx = ping.into_writer().unwrap();
        let mut rx = pong.into_reader().unwrap();
        let mut buf = [0u8; 64];
        for i in 0..N {
            tx.send(&i.to_le_bytes()).unwrap();
            let n = rx.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], &i.to_le_bytes());
        }
        rustix::thread::sched_setaffinity(None, &mine).unwrap();
    });
    eprintln!("{N} round trips on one CPU in {:?}", t.elapsed());
}

#[test]
fn read_and_write_make_the_ring_a_byte_stream() {
    use std::io::Read;
    let _wd = Watchdog::new("stream", Duration::from_secs(60));
    let seg = Anon::new(Ring::segment_size(1 << 16).unwrap()).unwrap();
    let mut w = Ring::create(&seg).unwrap().into_writer().unwrap();
    let mut r = Ring::open(&seg).unwrap().into_reader().unwrap();
    // Partial reads keep the rest of a message; recv then returns that rest.
    w.send(b"0123456789").unwrap();
    let mut four = [0u8; 4];
    r.read_exact(&mut four).unwrap();
    assert_eq!(&four, b"0123");
    let mut buf = [0u8; 16];
    let n = r.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"456789");
    w.send(b"").unwrap(); // an empty message is not an end of stream
    w.send(b"x").unwrap();
    assert_eq!(r.read(&mut buf).unwrap(), 1);

    let mut data = vec![0u8; 24 << 20];
    SplitMix64::new(11).fill(&mut data);
    let want = fnv1a64(&data);
    std::thread::scope(|s| {
        s.spawn(move || {
            std::io::copy(&mut &data[..], &mut w).unwrap();
            // dropping `w` ends the stream
        });
        let mut got = Vec::new();
        let n = std::io::copy(&mut r, &mut got).unwrap();
        assert_eq!(n, 24 << 20);
        assert_eq!(fnv1a64(&got), want);
    });
}

/// Positions are whatever a previous (or hostile) endpoint left in shared memory: a ring whose
/// positions sit just below 2^64 wraps around correctly, and a position that is not on a
/// record boundary is a typed error when an endpoint attaches, never a panic.
#[test]
fn positions_near_the_top_wrap_and_misaligned_positions_are_refused() {
    let _wd = Watchdog::new("wrap", Duration::from_secs(30));
    let seg = Anon::new(Ring::segment_size(1024).unwrap()).unwrap();
    let ring = Ring::create(&seg).unwrap();
    let top = u64::MAX - 63; // a record boundary just below the wrap
    seg.write::<u64>(WRITER_POS, &top).unwrap();
    seg.write::<u64>(READER_POS, &top).unwrap();
    let mut w = ring.into_writer().unwrap();
    let mut r = Ring::open(&seg).unwrap().into_reader().unwrap();
    let mut buf = [0u8; 1024];
    for seq in 0u32..500 {
        let msg = seq.to_le_bytes().repeat(1 + seq as usize % 60);
        w.send_timeout(&msg, Duration::from_secs(5)).unwrap();
        let n = r.recv_timeout(&mut buf, Duration::from_secs(5)).unwrap();
        assert_eq!(&buf[..n], &msg[..], "message {seq}");
    }
    assert!(
        seg.read::<u64>(WRITER_POS).unwrap() < top,
        "the positions wrapped"
    );
    drop((w, r));

    // The writer's position off a record boundary: no writer can attach (the reader never
    // reads it: it goes by the records' tags).
    let seg = Anon::new(Ring::segment_size(1024).unwrap()).unwrap();
    let ring = Ring::create(&seg).unwrap();
    seg.write::<u64>(WRITER_POS, &4).unwrap();
    let w = Ring::open(&seg).unwrap().into_writer();
    assert!(matches!(w, Err(Error::Corrupt { .. })), "{w:?}");
    let mut r = ring.into_reader().unwrap();
    assert!(matches!(r.try_recv(&mut buf), Err(Error::WouldBlock)));
    // The reader's position off a record boundary: neither end can attach.
    let seg = Anon::new(Ring::segment_size(1024).unwrap()).unwrap();
    let ring = Ring::create(&seg).unwrap();
    seg.write::<u64>(READER_POS, &(u64::MAX - 3)).unwrap();
    let r = Ring::open(&seg).unwrap().into_reader();
    assert!(matches!(r, Err(Error::Corrupt { .. })), "{r:?}");
    let w = ring.into_writer();
    assert!(matches!(w, Err(Error::Corrupt { .. })), "{w:?}");
    assert!(matches!(
        Ring::segment_size(1 << 63),
        Err(Error::InvalidSize { .. })
    ));
}

/// `Ring::segment_size` needs no type, refuses (never rounds) a capacity that is not a power of
/// two, and the ring made in a segment of that size has exactly that capacity.
#[test]
fn segment_size_refuses_what_is_not_a_power_of_two_and_is_exact() {
    for bad in [0, 1, 63, 100, 1000, 4097, (1 << 20) + 64] {
        assert!(
            matches!(Ring::segment_size(bad), Err(Error::InvalidSize { .. })),
            "{bad}"
        );
    }
    for cap in [64usize, 4096, 1 << 20] {
        let size = Ring::segment_size(cap).unwrap();
        assert_eq!(size, 384 + cap as u64);
        let seg = Anon::new(size).unwrap();
        assert_eq!(Ring::create(&seg).unwrap().capacity(), cap);
    }
}

/// Timed waits end at their deadline, not before and not never, while a stream of signals
/// (a handler without SA_RESTART) interrupts them: the ring's futex waits and the header's.
#[test]
fn timed_waits_survive_a_stream_of_signals() {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    if role().as_deref() == Some("signals") {
        extern "C" fn nothing(_: i32) {}
        let act = SigAction::new(
            SigHandler::Handler(nothing),
            SaFlags::empty(),
            SigSet::empty(),
        );
        // SAFETY: the handler does nothing (async-signal-safe); this process is a child that
        // exists for this test, so changing the disposition affects nothing else.
        #[allow(unsafe_code)]
        unsafe {
            sigaction(Signal::SIGUSR1, &act).unwrap();
        }
        let main = nix::sys::pthread::pthread_self();
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = nix::sys::pthread::pthread_kill(main, Signal::SIGUSR1);
                    std::thread::sleep(Duration::from_micros(500)); // a signal rate, not a sync
                }
            });
            let seg = Anon::new(Ring::segment_size(4096).unwrap()).unwrap();
            let header = ipc_shm::Header::at(&seg, 0).unwrap();
            let limit = Duration::from_millis(300);
            let t = Instant::now();
            assert!(matches!(header.wait_ready(limit), Err(Error::TimedOut)));
            assert!(t.elapsed() >= limit, "wait_ready ended early");
            let mut w = Ring::create(&seg).unwrap().into_writer().unwrap();
            let mut r = Ring::open(&seg).unwrap().into_reader().unwrap();
            for wait in [Wait::Park, Wait::Adaptive] {
                r.set_wait(wait);
                let mut buf = [0u8; 64];
                let t = Instant::now();
                let got = r.recv_timeout(&mut buf, limit);
                assert!(matches!(got, Err(Error::TimedOut)), "{got:?}");
                assert!(t.elapsed() >= limit, "recv_timeout ended early");
            }
            w.set_wait(Wait::Park);
            while w.try_send(&[7; 1000]).is_ok() {}
            let t = Instant::now();
            assert!(matches!(
                w.send_timeout(&[7; 1000], limit),
                Err(Error::TimedOut)
            ));
            assert!(t.elapsed() >= limit, "send_timeout ended early");
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        return;
    }
    let _wd = Watchdog::new("signals", Duration::from_secs(60));
    Proc::spawn(&mut child(
        &test_path!(timed_waits_survive_a_stream_of_signals),
        "signals",
    ))
    .unwrap()
    .expect_success(Duration::from_secs(50));
}

/// In place, both ways, between processes: the writer reserves room, fills it piece by piece
/// (abandoning some reservations, committing only a prefix of others), the reader reads each
/// message where it lies (headers at offsets, the rest in cache-sized chunks). Abandoned
/// reservations never show; every message arrives whole, once, in order.
#[test]
fn reservations_and_in_place_reads_carry_random_messages_between_processes() {
    const N: u64 = 30_000;
    let seg_size = Ring::segment_size(1 << 16).unwrap();
    if role().as_deref() == Some("reserver") {
        let seg = Shm::open(&std::env::var("SHM_NAME").unwrap(), seg_size).unwrap();
        let mut w = Ring::open_timeout(seg, Duration::from_secs(10))
            .unwrap()
            .into_writer()
            .unwrap();
        let mut rng = SplitMix64::new(3);
        let mut body = vec![0u8; 6000];
        for seq in 0..N {
            if seq % 7 == 3 {
                let mut res = w.reserve(rng.range(0, 3000) as usize).unwrap();
                let n = res.len().min(8);
                res.write(0, &u64::MAX.to_le_bytes()[..n]).unwrap();
                // Abandoned (goes out of scope without a commit): never seen.
            }
            let len = rng.range(0, 5000) as usize;
            rng.fill(&mut body[..len]);
            let extra = if seq % 3 == 0 {
                rng.range(1, 500) as usize
            } else {
                0
            };
            let mut res = w
                .reserve_timeout(16 + len + extra, Duration::from_secs(20))
                .unwrap();
            res.write(0, &seq.to_le_bytes()).unwrap();
            res.write(8, &fnv1a64(&body[..len]).to_le_bytes()).unwrap();
            // The payload in random pieces.
            let mut off = 0;
            while off < len {
                let piece = (rng.range(1, 1500) as usize).min(len - off);
                res.write(16 + off, &body[off..off + piece]).unwrap();
                off += piece;
            }
            if extra > 0 {
                res.commit_first(16 + len).unwrap();
            } else {
                res.commit();
            }
        }
        return;
    }
    let _wd = Watchdog::new("in place", Duration::from_secs(120));
    let name = posix_name("inplace");
    let seg = Shm::create(&name, seg_size).unwrap();
    let mut r = Ring::create(seg).unwrap().into_reader().unwrap();
    let mut c = child(
        &test_path!(reservations_and_in_place_reads_carry_random_messages_between_processes),
        "reserver",
    );
    c.env("SHM_NAME", &name);
    let p = Proc::spawn(&mut c).unwrap();
    let mut seq = 0u64;
    loop {
        let got = r.recv_with_timeout(Duration::from_secs(20), |m| {
            let mut hdr = [0u8; 16];
            m.read(0, &mut hdr).unwrap();
            let mut sum = 0xcbf2_9ce4_8422_2325u64; // fnv1a64 over the bytes after 16
            let mut at = 0usize;
            m.for_each_chunk(|chunk| {
                let skip = 16usize.saturating_sub(at).min(chunk.len());
                for &b in &chunk[skip..] {
                    sum = (sum ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
                }
                at += chunk.len();
            });
            assert_eq!(at, m.len());
            if seq.is_multiple_of(101) {
                let v = m.to_vec().unwrap();
                assert_eq!(fnv1a64(&v[16..]), sum);
            }
            (
                u64::from_le_bytes(hdr[..8].try_into().unwrap()),
                u64::from_le_bytes(hdr[8..].try_into().unwrap()),
                sum,
            )
        });
        match got {
            Ok((s, want, sum)) => {
                assert_eq!(s, seq, "in order, abandoned reservations unseen");
                assert_eq!(sum, want, "message {seq} whole");
                seq += 1;
            }
            Err(Error::PeerGone) => break,
            Err(e) => panic!("after {seq}: {e}"),
        }
    }
    assert_eq!(seq, N);
    p.expect_success(Duration::from_secs(30));
}

#[test]
fn in_place_access_is_bounds_checked_and_a_panicking_reader_keeps_its_message() {
    let seg = Anon::new(Ring::segment_size(4096).unwrap()).unwrap();
    let mut w = Ring::create(&seg).unwrap().into_writer().unwrap();
    let mut r = Ring::open(&seg).unwrap().into_reader().unwrap();
    let max = w.max_message();
    assert!(matches!(
        w.reserve(max + 1),
        Err(Error::MessageTooLarge { .. })
    ));
    let mut res = w.reserve(10).unwrap();
    assert_eq!(res.len(), 10);
    assert!(matches!(
        res.write(8, b"abc"),
        Err(Error::OutOfBounds { .. })
    ));
    assert!(matches!(
        res.write(usize::MAX, b"a"),
        Err(Error::OutOfBounds { .. })
    ));
    res.write(0, b"0123456789").unwrap();
    assert!(matches!(
        res.commit_first(11),
        Err(Error::OutOfBounds { .. })
    ));
    assert!(
        matches!(r.try_recv_vec(), Err(Error::WouldBlock)),
        "nothing committed"
    );
    w.reserve(0).unwrap().commit();
    let empty = r.try_recv_with(|m| {
        let mut called = false;
        m.for_each_chunk(|_| called = true);
        (m.len(), m.is_empty(), called)
    });
    assert_eq!(empty.unwrap(), (0, true, false));
    w.send(b"kept").unwrap();
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        r.try_recv_with(|m| {
            assert!(matches!(
                m.read(3, &mut [0u8; 2]),
                Err(Error::OutOfBounds { .. })
            ));
            panic!("the closure fails");
        })
    }));
    assert!(panicked.is_err());
    assert_eq!(
        r.try_recv_vec().unwrap(),
        b"kept",
        "not consumed by the panic"
    );
    // A full ring: try_reserve says so, and arms nothing without a doorbell.
    while w.try_send(&[1; 500]).is_ok() {}
    assert!(matches!(w.try_reserve(500), Err(Error::WouldBlock)));
    assert!(matches!(
        w.reserve_timeout(500, Duration::from_millis(10)),
        Err(Error::TimedOut)
    ));
}

/// A writer that died between committing a record and storing its position: the record is
/// delivered, and a new writer continues after it instead of overwriting it.
#[test]
fn a_new_writer_continues_after_a_record_its_dead_predecessor_committed_unpublished() {
    let seg_size = Ring::segment_size(4096).unwrap();
    if role().as_deref() == Some("half-dead") {
        let seg = Shm::open(&std::env::var("SHM_NAME").unwrap(), seg_size).unwrap();
        let mut w = Ring::open(&seg).unwrap().into_writer().unwrap();
        w.send(b"one").unwrap();
        // Commit "two" by hand, as the writer does, but die before storing the position.
        let tail = seg.read::<u64>(WRITER_POS).unwrap();
        let tag = u64::from((tail >> 3) as u32 & 0x3fff_ffff | 0x8000_0000);
        seg.write_bytes(384 + tail as usize + 8, b"two").unwrap();
        seg.write::<u64>(384 + tail as usize, &((tag << 32) | 3))
            .unwrap();
        std::process::exit(0);
    }
    let _wd = Watchdog::new("half-dead writer", Duration::from_secs(30));
    let name = posix_name("halfdead");
    let seg = Shm::create(&name, seg_size).unwrap();
    let ring = Ring::create(&seg).unwrap();
    let mut c = child(
        &test_path!(
            a_new_writer_continues_after_a_record_its_dead_predecessor_committed_unpublished
        ),
        "half-dead",
    );
    c.env("SHM_NAME", &name);
    Proc::spawn(&mut c)
        .unwrap()
        .expect_success(Duration::from_secs(20));
    let mut w = Ring::open(&seg).unwrap().into_writer().unwrap();
    w.send(b"three").unwrap();
    let mut r = ring.into_reader().unwrap();
    for want in [&b"one"[..], b"two", b"three"] {
        assert_eq!(r.recv_vec_timeout(Duration::from_secs(5)).unwrap(), want);
    }
    assert!(matches!(r.try_recv_vec(), Err(Error::WouldBlock)));
}

/// Sides that park and wake all the time, switching how they wait as they go (so the barrier
/// protocol changes under them): nothing is lost, nothing waits for ever.
#[test]
fn parked_sides_are_always_woken_whatever_they_switch_to() {
    const N: u64 = 40_000;
    let seg_size = Ring::segment_size(1024).unwrap();
    let waits = [Wait::Park, Wait::SpinThenPark, Wait::Adaptive];
    if role().as_deref() == Some("switcher") {
        let seg = Shm::open(&std::env::var("SHM_NAME").unwrap(), seg_size).unwrap();
        let mut w = Ring::open_timeout(seg, Duration::from_secs(10))
            .unwrap()
            .into_writer()
            .unwrap();
        let mut rng = SplitMix64::new(17);
        for seq in 0..N {
            if seq % 500 == 0 {
                w.set_wait(waits[rng.range(0, 2) as usize]);
            }
            let len = rng.range(8, 300) as usize;
            let mut msg = vec![(seq % 251) as u8; len];
            msg[..8].copy_from_slice(&seq.to_le_bytes());
            w.send_timeout(&msg, Duration::from_secs(20)).unwrap();
            if rng.range(0, 30) == 0 {
                let t = Instant::now();
                let pause = Duration::from_micros(rng.range(0, 200));
                while t.elapsed() < pause {
                    std::hint::spin_loop(); // pacing: the reader drains and parks
                }
            }
        }
        return;
    }
    let _wd = Watchdog::new("park and wake", Duration::from_secs(120));
    let name = posix_name("switch");
    let seg = Shm::create(&name, seg_size).unwrap();
    let mut r = Ring::create(seg).unwrap().into_reader().unwrap();
    let mut c = child(
        &test_path!(parked_sides_are_always_woken_whatever_they_switch_to),
        "switcher",
    );
    c.env("SHM_NAME", &name);
    let p = Proc::spawn(&mut c).unwrap();
    let mut rng = SplitMix64::new(18);
    let mut buf = [0u8; 1024];
    let mut slowest = Duration::ZERO;
    for seq in 0..N {
        if seq % 700 == 0 {
            r.set_wait(waits[rng.range(0, 2) as usize]);
        }
        let t = Instant::now();
        let n = r.recv_timeout(&mut buf, Duration::from_secs(20)).unwrap();
        slowest = slowest.max(t.elapsed());
        assert_eq!(u64::from_le_bytes(buf[..8].try_into().unwrap()), seq);
        assert!(
            buf[8..n].iter().all(|&b| b == (seq % 251) as u8),
            "message {seq}"
        );
        if rng.range(0, 40) == 0 {
            let t = Instant::now();
            let pause = Duration::from_micros(rng.range(0, 200));
            while t.elapsed() < pause {
                std::hint::spin_loop(); // pacing: the writer fills the ring and parks
            }
        }
    }
    assert!(matches!(
        r.recv_timeout(&mut buf, Duration::from_secs(20)),
        Err(Error::PeerGone)
    ));
    p.expect_success(Duration::from_secs(30));
    eprintln!("{N} messages; the longest single wait took {slowest:?}");
}

/// The reader stores its position for pollers only every 16 records: a writer waiting for room
/// still sees every record freed — here one — however long the reader then stays away, and a
/// `try_send` sees it at once.
#[test]
fn a_writer_waiting_for_room_sees_every_record_freed_between_publications() {
    let _wd = Watchdog::new("room between publications", Duration::from_secs(60));
    let seg = Anon::new(Ring::segment_size(4096).unwrap()).unwrap();
    let mut w = Ring::create(&seg).unwrap().into_writer().unwrap();
    let mut r = Ring::open(&seg).unwrap().into_reader().unwrap();
    let big = [5u8; 1000];
    let mut buf = [0u8; 1000];
    for wait in [Wait::SpinThenPark, Wait::Park, Wait::Adaptive] {
        w.set_wait(wait);
        while w.try_send(&big).is_ok() {}
        // One record freed (fewer than 16): try_send sees the room at once.
        assert_eq!(r.try_recv(&mut buf).unwrap(), 1000);
        w.try_send(&big).unwrap();
        // Full again; a blocked send is satisfied by one record freed, while the reader then
        // does nothing more until the send has returned.
        let sent = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                w.send_timeout(&big, Duration::from_secs(20)).unwrap();
                sent.store(true, std::sync::atomic::Ordering::Release);
            });
            assert_eq!(
                r.recv_timeout(&mut buf, Duration::from_secs(20)).unwrap(),
                1000
            );
            let t = Instant::now();
            while !sent.load(std::sync::atomic::Ordering::Acquire) {
                assert!(
                    t.elapsed() < Duration::from_secs(20),
                    "{wait:?}: the send never saw the room"
                );
                std::thread::yield_now();
            }
        });
        while r.try_recv(&mut buf).is_ok() {}
    }
}
