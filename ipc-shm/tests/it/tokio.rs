//! The `tokio` feature: async ring endpoints between processes on current-thread runtimes (a
//! blocking wait would stall the runtime, and the yield counter would show it), cancellation
//! (a send or receive future dropped while pending loses nothing and leaves nothing
//! half-written), a peer that exits without closing, and a doorbell on both ends.
#![cfg(feature = "tokio")]

use std::future::Future;
use std::os::fd::AsFd;
use std::pin::pin;
use std::time::Duration;

use ipc_shm::{
    Anon, AsyncRingReader, AsyncRingWriter, ChildFds, Doorbell, Error, Memfd, Ring, Seals, Size,
};
use ipc_testkit::{Proc, SplitMix64, Watchdog, child, fnv1a64, role, test_path};

/// The bound on every await.
const LIMIT: Duration = Duration::from_secs(20);
const SEG_AT: i32 = 3;
const DATA_AT: i32 = 4;
const SPACE_AT: i32 = 5;
const CAP: usize = 1 << 14;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn bounded<T>(what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(LIMIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: not done in {LIMIT:?}"),
    }
}

/// Polls `fut` exactly once: `Some` if it finished, `None` if it was pending (the caller then
/// drops it).
async fn poll_once<T>(fut: impl Future<Output = T>) -> Option<T> {
    let mut fut = pin!(fut);
    tokio::select! {
        biased;
        v = &mut fut => Some(v),
        () = std::future::ready(()) => None,
    }
}

/// Message `seq`: number, checksum of the payload, payload of a random length.
fn message(rng: &mut SplitMix64, seq: u64, max: u64) -> Vec<u8> {
    let len = rng.range(0, max) as usize;
    let mut body = vec![0u8; len];
    rng.fill(&mut body);
    let mut m = Vec::with_capacity(16 + len);
    m.extend_from_slice(&seq.to_le_bytes());
    m.extend_from_slice(&fnv1a64(&body).to_le_bytes());
    m.extend_from_slice(&body);
    m
}

/// The sequence number of a whole message (checksum verified).
fn whole(m: &[u8]) -> u64 {
    assert!(m.len() >= 16, "a message of {} bytes", m.len());
    let seq = u64::from_le_bytes(m[..8].try_into().unwrap());
    let sum = u64::from_le_bytes(m[8..16].try_into().unwrap());
    assert_eq!(fnv1a64(&m[16..]), sum, "message {seq} is whole");
    seq
}

/// The ring's memfd and doorbell, in this process and placed for a child.
struct Shared {
    seg: Memfd,
    bell: Doorbell,
}

impl Shared {
    fn new() -> Shared {
        let mut seg = Memfd::create("async-ring", Ring::segment_size(CAP).unwrap()).unwrap();
        seg.seal(Seals::SIZE).unwrap();
        Shared {
            seg,
            bell: Doorbell::new().unwrap(),
        }
    }

    /// Spawns the test binary as `role`, with the ring and the doorbell at 3, 4 and 5.
    fn spawn(&self, test: &str, role: &str) -> Proc {
        let mut c = child(test, role);
        ChildFds::new()
            .fd_at(SEG_AT, self.seg.as_fd().try_clone_to_owned().unwrap())
            .unwrap()
            .fd_at(DATA_AT, self.bell.data_fd().try_clone_to_owned().unwrap())
            .unwrap()
            .fd_at(SPACE_AT, self.bell.space_fd().try_clone_to_owned().unwrap())
            .unwrap()
            .apply(&mut c);
        Proc::spawn(&mut c).unwrap()
    }
}

/// In a child: the ring and doorbell its parent placed.
fn inherited() -> Ring<Memfd> {
    let size = Ring::segment_size(CAP).unwrap();
    let seg = Memfd::from_inherited(SEG_AT, Seals::SIZE, Size::Exact(size)).unwrap();
    let bell = Doorbell::from_inherited(DATA_AT, SPACE_AT).unwrap();
    Ring::open(seg).unwrap().with_doorbell(bell)
}

const N: u64 = 20_000;

#[test]
fn async_endpoints_carry_messages_between_processes_without_blocking_the_runtime() {
    if role().as_deref() == Some("async-writer") {
        return runtime().block_on(async {
            let mut w = AsyncRingWriter::new(inherited().into_writer().unwrap()).unwrap();
            let mut rng = SplitMix64::new(1);
            for seq in 0..N {
                let m = message(&mut rng, seq, 3000);
                bounded("send", w.send(&m)).await.unwrap();
                if seq % 499 == 0 {
                    tokio::time::sleep(Duration::from_micros(200)).await; // the reader waits
                }
            }
        });
    }
    let _wd = Watchdog::new("async endpoints", Duration::from_secs(120));
    let shared = Shared::new();
    let r = Ring::create(&shared.seg)
        .unwrap()
        .with_doorbell(shared.bell.try_clone().unwrap())
        .into_reader()
        .unwrap();
    let p = shared.spawn(
        &test_path!(async_endpoints_carry_messages_between_processes_without_blocking_the_runtime),
        "async-writer",
    );
    let yields = runtime().block_on(async {
        let mut r = AsyncRingReader::new(r).unwrap();
        let done = std::cell::Cell::new(false);
        let counter = async {
            let mut n = 0u64;
            while !done.get() {
                tokio::task::yield_now().await;
                n += 1;
            }
            n
        };
        let receiver = async {
            let mut buf = vec![0u8; r.get_ref().max_message()];
            for seq in 0..N {
                let n = bounded("recv", r.recv(&mut buf)).await.unwrap();
                assert_eq!(whole(&buf[..n]), seq, "in order, none lost");
            }
            let end = bounded("end", r.recv(&mut buf)).await;
            assert!(matches!(end, Err(Error::PeerGone)), "{end:?}");
            done.set(true);
        };
        let (n, ()) = tokio::join!(counter, receiver);
        n
    });
    p.expect_success(Duration::from_secs(30));
    eprintln!("{N} messages; another task ran {yields} times meanwhile");
    assert!(yields > 0, "the receiver let the runtime run other tasks");
}

/// The writer polls each send once and drops it if it is pending (the ring is full), then
/// either retries that message or gives it up. The reader gets exactly the messages whose send
/// finished, each whole, once, in order; a summary at the end says which.
#[test]
fn a_dropped_send_future_leaves_no_half_written_record() {
    if role().as_deref() == Some("cancel-writer") {
        return runtime().block_on(async {
            let mut w = AsyncRingWriter::new(inherited().into_writer().unwrap()).unwrap();
            let mut rng = SplitMix64::new(2);
            let (mut sent, mut xor, mut dropped) = (0u64, 0u64, 0u64);
            let mut seq = 0u64;
            while seq < N {
                let m = message(&mut rng, seq, 2000);
                loop {
                    match poll_once(w.send(&m)).await {
                        Some(r) => {
                            r.unwrap();
                            sent += 1;
                            xor ^= seq.wrapping_mul(0x9e37_79b9_7f4a_7c15);
                            break;
                        }
                        None => {
                            dropped += 1;
                            if rng.range(0, 1) == 0 {
                                break; // given up: never sent
                            }
                            tokio::task::yield_now().await; // retried later
                        }
                    }
                }
                seq += 1;
            }
            let mut summary = Vec::new();
            for v in [u64::MAX, sent, xor] {
                summary.extend_from_slice(&v.to_le_bytes());
            }
            bounded("summary", w.send(&summary)).await.unwrap();
            eprintln!("{sent} sent, {dropped} send futures dropped while pending");
            assert!(dropped > 0, "some sends were pending when dropped");
        });
    }
    let _wd = Watchdog::new("dropped sends", Duration::from_secs(120));
    let shared = Shared::new();
    let r = Ring::create(&shared.seg)
        .unwrap()
        .with_doorbell(shared.bell.try_clone().unwrap())
        .into_reader()
        .unwrap();
    let p = shared.spawn(
        &test_path!(a_dropped_send_future_leaves_no_half_written_record),
        "cancel-writer",
    );
    runtime().block_on(async {
        let mut r = AsyncRingReader::new(r).unwrap();
        let mut buf = vec![0u8; r.get_ref().max_message()];
        let (mut got, mut xor, mut last) = (0u64, 0u64, None::<u64>);
        loop {
            let n = bounded("recv", r.recv(&mut buf)).await.unwrap();
            let m = &buf[..n];
            if n == 24 && m[..8] == u64::MAX.to_le_bytes() {
                let sent = u64::from_le_bytes(m[8..16].try_into().unwrap());
                let want = u64::from_le_bytes(m[16..24].try_into().unwrap());
                assert_eq!(got, sent, "every finished send arrived, and nothing else");
                assert_eq!(xor, want, "exactly the finished ones");
                break;
            }
            let seq = whole(m);
            assert!(last.is_none_or(|l| seq > l), "once each, in order");
            last = Some(seq);
            got += 1;
            xor ^= seq.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            if got % 50 == 0 {
                tokio::time::sleep(Duration::from_micros(300)).await; // let the ring fill
            }
        }
    });
    p.expect_success(Duration::from_secs(30));
}

/// A blocking writer (with the doorbell) in a child; the async reader polls each receive once
/// and drops it if it is pending, or races it against a short timer. No message is lost.
#[test]
fn a_dropped_receive_future_loses_no_message() {
    if role().as_deref() == Some("steady-writer") {
        let mut w = inherited().into_writer().unwrap();
        let mut rng = SplitMix64::new(3);
        for seq in 0..N {
            w.send_timeout(&message(&mut rng, seq, 1500), LIMIT)
                .unwrap();
            if seq % 97 == 0 {
                let t = std::time::Instant::now();
                while t.elapsed() < Duration::from_micros(150) {
                    std::hint::spin_loop(); // pacing: the reader finds the ring empty
                }
            }
        }
        return;
    }
    let _wd = Watchdog::new("dropped receives", Duration::from_secs(120));
    let shared = Shared::new();
    let r = Ring::create(&shared.seg)
        .unwrap()
        .with_doorbell(shared.bell.try_clone().unwrap())
        .into_reader()
        .unwrap();
    let p = shared.spawn(
        &test_path!(a_dropped_receive_future_loses_no_message),
        "steady-writer",
    );
    let dropped = runtime().block_on(async {
        let mut r = AsyncRingReader::new(r).unwrap();
        let mut buf = vec![0u8; r.get_ref().max_message()];
        let mut rng = SplitMix64::new(4);
        let (mut seq, mut dropped) = (0u64, 0u64);
        let deadline = tokio::time::Instant::now() + LIMIT * 4;
        while seq < N {
            assert!(tokio::time::Instant::now() < deadline, "stuck at {seq}");
            let got = if rng.range(0, 1) == 0 {
                poll_once(r.recv(&mut buf)).await
            } else {
                let timer = Duration::from_micros(rng.range(1, 300));
                tokio::time::timeout(timer, r.recv(&mut buf)).await.ok()
            };
            match got {
                Some(n) => {
                    let n = n.unwrap();
                    assert_eq!(whole(&buf[..n]), seq, "in order, none lost");
                    seq += 1;
                }
                None => dropped += 1,
            }
        }
        let end = bounded("end", r.recv(&mut buf)).await;
        assert!(matches!(end, Err(Error::PeerGone)), "{end:?}");
        dropped
    });
    p.expect_success(Duration::from_secs(30));
    eprintln!("{N} messages; {dropped} receive futures dropped while pending");
    assert!(dropped > 0, "some receives were pending when dropped");
}

#[test]
fn async_endpoints_notice_a_peer_that_exits_without_closing() {
    match role().as_deref() {
        Some("async-quitter") => {
            return runtime().block_on(async {
                let mut w = AsyncRingWriter::new(inherited().into_writer().unwrap()).unwrap();
                for i in 0u32..3 {
                    bounded("send", w.send(&i.to_le_bytes())).await.unwrap();
                }
                std::process::exit(0); // no destructor: the ring is not closed
            });
        }
        Some("reader-quitter") => {
            let mut r = inherited().into_reader().unwrap();
            let _ = r.recv_vec_timeout(LIMIT).unwrap();
            std::process::exit(0);
        }
        _ => {}
    }
    let _wd = Watchdog::new("async peer gone", Duration::from_secs(60));
    let test = test_path!(async_endpoints_notice_a_peer_that_exits_without_closing);
    // A reader waiting when its writer dies.
    let shared = Shared::new();
    let r = Ring::create(&shared.seg)
        .unwrap()
        .with_doorbell(shared.bell.try_clone().unwrap())
        .into_reader()
        .unwrap();
    let p = shared.spawn(&test, "async-quitter");
    runtime().block_on(async {
        let mut r = AsyncRingReader::new(r).unwrap();
        let mut buf = [0u8; 16];
        for i in 0u32..3 {
            let n = bounded("recv", r.recv(&mut buf)).await.unwrap();
            assert_eq!(buf[..n], i.to_le_bytes());
        }
        let end = bounded("recv after the writer died", r.recv(&mut buf)).await;
        assert!(matches!(end, Err(Error::PeerGone)), "{end:?}");
    });
    p.expect_success(Duration::from_secs(20));
    // A writer waiting for room when its reader dies.
    let shared = Shared::new();
    let w = Ring::create(&shared.seg)
        .unwrap()
        .with_doorbell(shared.bell.try_clone().unwrap())
        .into_writer()
        .unwrap();
    let p = shared.spawn(&test, "reader-quitter");
    runtime().block_on(async {
        let mut w = AsyncRingWriter::new(w).unwrap();
        let big = vec![9u8; 4000];
        let r = bounded("send until the reader is gone", async {
            loop {
                if let Err(e) = w.send(&big).await {
                    return e;
                }
            }
        })
        .await;
        assert!(matches!(r, Error::PeerGone), "{r:?}");
    });
    p.expect_success(Duration::from_secs(20));
}

#[test]
fn async_endpoints_need_a_doorbell_and_write_and_read_in_place() {
    runtime().block_on(async {
        let seg = Anon::new(Ring::segment_size(4096).unwrap()).unwrap();
        let ring = Ring::create(&seg).unwrap();
        let e = AsyncRingWriter::new(ring.into_writer().unwrap()).unwrap_err();
        assert!(matches!(e, Error::NoDoorbell), "{e:?}");
        let e = AsyncRingReader::new(Ring::open(&seg).unwrap().into_reader().unwrap());
        assert!(matches!(e, Err(Error::NoDoorbell)));

        let seg = Anon::new(Ring::segment_size(4096).unwrap()).unwrap();
        let bell = Doorbell::new().unwrap();
        let w = Ring::create(&seg)
            .unwrap()
            .with_doorbell(bell.try_clone().unwrap())
            .into_writer()
            .unwrap();
        let r = Ring::open(&seg)
            .unwrap()
            .with_doorbell(bell)
            .into_reader()
            .unwrap();
        let (mut w, mut r) = (
            AsyncRingWriter::new(w).unwrap(),
            AsyncRingReader::new(r).unwrap(),
        );
        let writer = async {
            for i in 0u64..2000 {
                let len = 9 + (i as usize * 37) % 900;
                let mut res = bounded("reserve", w.reserve(len)).await.unwrap();
                res.write(0, &i.to_le_bytes()).unwrap();
                res.write(len - 1, &[i as u8]).unwrap();
                res.commit();
            }
        };
        let reader = async {
            for i in 0u64..2000 {
                let (seq, last, len) = bounded(
                    "recv_with",
                    r.recv_with(|m| {
                        let mut b = [0u8; 8];
                        m.read(0, &mut b).unwrap();
                        let mut l = [0u8; 1];
                        m.read(m.len() - 1, &mut l).unwrap();
                        (u64::from_le_bytes(b), l[0], m.len())
                    }),
                )
                .await
                .unwrap();
                assert_eq!((seq, last, len), (i, i as u8, 9 + (i as usize * 37) % 900));
            }
        };
        tokio::join!(writer, reader);
        let w = w.into_inner();
        drop(w);
        let end = bounded("end", r.recv_vec()).await;
        assert!(matches!(end, Err(Error::PeerGone)), "{end:?}");
    });
}
