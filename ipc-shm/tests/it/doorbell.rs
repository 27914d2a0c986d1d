//! Doorbells: a reader in a plain epoll loop woken by a writer in another process (eventfds
//! handed over at chosen numbers, and FIFOs opened by name), rung only for a side that waits,
//! both endpoints required, the named doorbell's lifetime and errors.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::time::{Duration, Instant};

use ipc_shm::{Anon, ChildFds, Doorbell, Error, Memfd, Ring, Seals, Shm, Size};
use ipc_testkit::{Proc, SplitMix64, Watchdog, child, fnv1a64, posix_name, role, test_path};
use rustix::event::{PollFd, PollFlags, Timespec, epoll};

use crate::{dev_shm, ready_then_wait_for_eof, spawn_ready};

/// Whether `fd` is readable now (a zero-timeout poll).
fn readable(fd: BorrowedFd<'_>) -> bool {
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    rustix::event::poll(&mut fds, Some(&zero)).unwrap() == 1
}

/// Message `seq`: its number, a checksum of the payload, then a payload of a random length.
fn message(rng: &mut SplitMix64, seq: u64) -> Vec<u8> {
    let len = rng.range(0, 600) as usize;
    let mut body = vec![0u8; len];
    rng.fill(&mut body);
    let mut m = Vec::with_capacity(16 + len);
    m.extend_from_slice(&seq.to_le_bytes());
    m.extend_from_slice(&fnv1a64(&body).to_le_bytes());
    m.extend_from_slice(&body);
    m
}

fn check_message(m: &[u8], seq: u64) {
    assert!(m.len() >= 16, "message {seq} is {} bytes", m.len());
    assert_eq!(
        u64::from_le_bytes(m[..8].try_into().unwrap()),
        seq,
        "in order, none lost"
    );
    let sum = u64::from_le_bytes(m[8..16].try_into().unwrap());
    assert_eq!(fnv1a64(&m[16..]), sum, "message {seq} whole");
}

/// Sends `n` messages in bursts separated by pauses, so that the reader empties the ring and
/// goes back to waiting on its doorbell many times.
fn send_in_bursts(w: &mut ipc_shm::RingWriter<impl ipc_shm::Segment>, n: u64) {
    let mut rng = SplitMix64::new(99);
    for seq in 0..n {
        w.send_timeout(&message(&mut rng, seq), Duration::from_secs(20))
            .unwrap();
        if seq % 97 == 0 {
            // A pause (pacing, not synchronisation): the reader catches up and waits.
            let t = Instant::now();
            while t.elapsed() < Duration::from_micros(300) {
                std::hint::spin_loop();
            }
        }
    }
}

/// Receives `n` messages in an epoll loop that waits on the reader's doorbell; returns how many
/// times it waited.
fn receive_in_epoll_loop(r: &mut ipc_shm::RingReader<impl ipc_shm::Segment>, n: u64) -> u64 {
    let ep = epoll::create(epoll::CreateFlags::CLOEXEC).unwrap();
    epoll::add(
        &ep,
        r.doorbell_fd().unwrap(),
        epoll::EventData::new_u64(1),
        epoll::EventFlags::IN,
    )
    .unwrap();
    let mut events = Vec::with_capacity(4);
    let limit = Timespec {
        tv_sec: 20,
        tv_nsec: 0,
    };
    let (mut seq, mut waits) = (0u64, 0u64);
    let mut buf = vec![0u8; r.max_message()];
    loop {
        match r.try_recv(&mut buf) {
            Ok(len) => {
                check_message(&buf[..len], seq);
                seq += 1;
            }
            Err(Error::WouldBlock) => {
                events.clear();
                epoll::wait(
                    &ep,
                    rustix::buffer::spare_capacity(&mut events),
                    Some(&limit),
                )
                .unwrap();
                assert!(!events.is_empty(), "no ring in 20 s after message {seq}");
                waits += 1;
            }
            Err(Error::PeerGone) => break,
            Err(e) => panic!("after {seq} messages: {e}"),
        }
    }
    assert_eq!(seq, n, "exact total");
    waits
}

const BELL_N: u64 = 20_000;
const SEG_AT: i32 = 3;
const DATA_AT: i32 = 4;
const SPACE_AT: i32 = 5;

#[test]
fn an_epoll_loop_reader_is_woken_by_a_writer_in_a_spawned_child() {
    let size = Ring::segment_size(1 << 14).unwrap();
    if role().as_deref() == Some("bell-writer") {
        let seg = Memfd::from_inherited(SEG_AT, Seals::SIZE, Size::Exact(size)).unwrap();
        let bell = Doorbell::from_inherited(DATA_AT, SPACE_AT).unwrap();
        let mut w = Ring::open(seg)
            .unwrap()
            .with_doorbell(bell)
            .into_writer()
            .unwrap();
        send_in_bursts(&mut w, BELL_N);
        return; // dropping the writer closes its end and rings the doorbell
    }
    let _wd = Watchdog::new("epoll doorbell", Duration::from_secs(120));
    let mut seg = Memfd::create("bell-ring", size).unwrap();
    seg.seal(Seals::SIZE).unwrap();
    let bell = Doorbell::new().unwrap();
    let mut r = Ring::create(&seg)
        .unwrap()
        .with_doorbell(bell.try_clone().unwrap())
        .into_reader()
        .unwrap();
    let mut c = child(
        &test_path!(an_epoll_loop_reader_is_woken_by_a_writer_in_a_spawned_child),
        "bell-writer",
    );
    ChildFds::new()
        .fd_at(SEG_AT, seg.as_fd().try_clone_to_owned().unwrap())
        .unwrap()
        .fd_at(DATA_AT, bell.data_fd().try_clone_to_owned().unwrap())
        .unwrap()
        .fd_at(SPACE_AT, bell.space_fd().try_clone_to_owned().unwrap())
        .unwrap()
        .apply(&mut c);
    let p = Proc::spawn(&mut c).unwrap();
    drop(c);
    let waits = receive_in_epoll_loop(&mut r, BELL_N);
    p.expect_success(Duration::from_secs(30));
    eprintln!("{BELL_N} messages, the reader waited on its doorbell {waits} times");
    assert!(waits > 0, "the loop waited on the doorbell");
}

#[test]
fn a_named_doorbell_joins_unrelated_processes() {
    let size = Ring::segment_size(1 << 14).unwrap();
    if role().as_deref() == Some("named-writer") {
        let name = std::env::var("SHM_NAME").unwrap();
        let seg = Shm::open(&name, size).unwrap();
        let bell = Doorbell::open(&name).unwrap();
        assert!(!bell.is_owner());
        let mut w = Ring::open_timeout(seg, Duration::from_secs(10))
            .unwrap()
            .with_doorbell(bell)
            .into_writer()
            .unwrap();
        send_in_bursts(&mut w, BELL_N);
        return;
    }
    let _wd = Watchdog::new("named doorbell", Duration::from_secs(120));
    let name = posix_name("bell");
    let seg = Shm::create(&name, size).unwrap();
    let bell = Doorbell::create(&name).unwrap();
    assert!(bell.is_owner());
    assert_eq!(bell.name(), Some(name.as_str()));
    for suffix in [".doorbell-data", ".doorbell-space"] {
        let path = dev_shm(&format!("{name}{suffix}"));
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_fifo(), "{path:?}");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }
    let mut r = Ring::create(seg)
        .unwrap()
        .with_doorbell(bell)
        .into_reader()
        .unwrap();
    let mut c = child(
        &test_path!(a_named_doorbell_joins_unrelated_processes),
        "named-writer",
    );
    c.env("SHM_NAME", &name);
    let p = Proc::spawn(&mut c).unwrap();
    let waits = receive_in_epoll_loop(&mut r, BELL_N);
    p.expect_success(Duration::from_secs(30));
    eprintln!("{BELL_N} messages by name, {waits} waits on the doorbell");
    drop(r); // the owner goes with the reader: both FIFOs are removed
    assert!(!dev_shm(&format!("{name}.doorbell-data")).exists());
    assert!(!dev_shm(&format!("{name}.doorbell-space")).exists());
}

#[test]
fn the_doorbell_rings_only_for_a_side_that_waits_on_it() {
    let seg = Anon::new(Ring::segment_size(4096).unwrap()).unwrap();
    let bell = Doorbell::new().unwrap();
    let mut w = Ring::create(&seg)
        .unwrap()
        .with_doorbell(bell.try_clone().unwrap())
        .into_writer()
        .unwrap();
    let mut r = Ring::open(&seg)
        .unwrap()
        .with_doorbell(bell.try_clone().unwrap())
        .into_reader()
        .unwrap();
    let mut buf = [0u8; 64];
    // Nobody waits: nothing rings, however many messages go through.
    for i in 0u32..30 {
        w.send(&i.to_le_bytes()).unwrap();
    }
    for i in 0u32..30 {
        assert_eq!(r.try_recv(&mut buf).unwrap(), 4);
        assert_eq!(buf[..4], i.to_le_bytes());
    }
    assert!(!readable(bell.data_fd()) && !readable(bell.space_fd()));
    // The reader waits (an empty ring armed its half): the next message rings it, once.
    assert!(matches!(r.try_recv(&mut buf), Err(Error::WouldBlock)));
    assert!(!readable(bell.data_fd()));
    w.send(b"ring").unwrap();
    assert!(readable(bell.data_fd()));
    w.send(b"no second ring needed").unwrap();
    assert_eq!(r.try_recv(&mut buf).unwrap(), 4); // and clears it
    assert!(!readable(bell.data_fd()));
    assert_eq!(r.try_recv(&mut buf).unwrap(), 21);
    // The writer waits for room: the reader rings the other half when it frees some.
    let big = [7u8; 1000];
    while w.try_send(&big).is_ok() {}
    assert!(!readable(bell.space_fd()));
    assert_eq!(r.try_recv(&mut [0u8; 1000]).unwrap(), 1000);
    assert!(readable(bell.space_fd()));
    w.try_send(&big).unwrap();
    assert!(!readable(bell.space_fd()));
    // Closing rings a waiting peer too.
    while r.try_recv(&mut [0u8; 1000]).is_ok() {}
    assert!(!readable(bell.data_fd()));
    drop(w);
    assert!(readable(bell.data_fd()));
    assert!(matches!(r.try_recv(&mut buf), Err(Error::PeerGone)));
}

#[test]
fn both_endpoints_need_the_doorbell() {
    // A reader waiting on its doorbell: a writer without one cannot attach (it could never
    // ring), and the role stays free for one that has it.
    let seg = Anon::new(Ring::segment_size(4096).unwrap()).unwrap();
    let bell = Doorbell::new().unwrap();
    let ring = Ring::create(&seg).unwrap();
    let mut r = Ring::open(&seg)
        .unwrap()
        .with_doorbell(bell.try_clone().unwrap())
        .into_reader()
        .unwrap();
    let mut buf = [0u8; 16];
    assert!(matches!(r.try_recv(&mut buf), Err(Error::WouldBlock)));
    let e = ring.into_writer().unwrap_err();
    assert!(matches!(e, Error::NoDoorbell), "{e:?}");
    assert!(e.to_string().contains("Ring::with_doorbell"), "{e}");
    assert!(r.is_peer_alive(), "the refused writer left no trace");
    let mut w = Ring::open(&seg)
        .unwrap()
        .with_doorbell(bell)
        .into_writer()
        .unwrap();
    w.send(b"ok").unwrap();
    assert_eq!(r.try_recv(&mut buf).unwrap(), 2);

    // A writer without a doorbell attached first: a reader cannot wait on one; its blocking
    // calls (a futex) still work.
    let seg = Anon::new(Ring::segment_size(4096).unwrap()).unwrap();
    let mut w = Ring::create(&seg).unwrap().into_writer().unwrap();
    let mut r = Ring::open(&seg)
        .unwrap()
        .with_doorbell(Doorbell::new().unwrap())
        .into_reader()
        .unwrap();
    assert!(matches!(r.try_recv(&mut buf), Err(Error::NoDoorbell)));
    w.send(b"futex").unwrap();
    assert_eq!(r.recv_timeout(&mut buf, Duration::from_secs(5)).unwrap(), 5);
    let io: std::io::Error = Error::NoDoorbell.into();
    assert_eq!(io.kind(), std::io::ErrorKind::InvalidInput);
}

#[test]
fn named_doorbells_follow_the_lifetime_model() {
    if role().as_deref() == Some("bell-owner") {
        let name = std::env::var("SHM_NAME").unwrap();
        let _bell = Doorbell::create(&name).unwrap();
        ready_then_wait_for_eof();
        return;
    }
    let _wd = Watchdog::new("named doorbell lifetime", Duration::from_secs(60));
    for bad in ["", "x", "/", "/a/b", "/.."] {
        assert!(
            matches!(Doorbell::create(bad), Err(Error::InvalidName { .. })),
            "{bad:?}"
        );
    }
    let long = format!("/{}", "x".repeat(241));
    assert!(matches!(
        Doorbell::create(&long),
        Err(Error::InvalidName { .. })
    ));
    let name = posix_name("bellx");
    assert!(matches!(Doorbell::open(&name), Err(Error::NotFound { .. })));
    assert!(matches!(
        Doorbell::remove_stale(&name),
        Err(Error::NotFound { .. })
    ));
    let owner = Doorbell::create(&name).unwrap();
    assert!(matches!(
        Doorbell::create(&name),
        Err(Error::AlreadyExists { .. })
    ));
    assert!(matches!(
        Doorbell::remove_stale(&name),
        Err(Error::OwnerAlive { .. })
    ));
    let opener = Doorbell::open(&name).unwrap();
    let copy = owner.try_clone().unwrap();
    assert!(!opener.is_owner() && !copy.is_owner());
    drop((opener, copy)); // remove nothing
    let data_path = dev_shm(&format!("{name}.doorbell-data"));
    assert!(data_path.exists());
    drop(owner);
    assert!(!data_path.exists());

    // A killed owner leaves its FIFOs; remove_stale removes them.
    let mut c = child(
        &test_path!(named_doorbells_follow_the_lifetime_model),
        "bell-owner",
    );
    c.env("SHM_NAME", &name);
    let (mut p, _lines) = spawn_ready(&mut c);
    assert!(matches!(
        Doorbell::remove_stale(&name),
        Err(Error::OwnerAlive { .. })
    ));
    p.kill().unwrap();
    let _ = p.wait_timeout(Duration::from_secs(10)).unwrap();
    assert!(data_path.exists(), "a killed owner removes nothing");
    Doorbell::remove_stale(&name).unwrap();
    assert!(!data_path.exists());
    assert!(!dev_shm(&format!("{name}.doorbell-space")).exists());

    // Something else planted at a doorbell's path is refused.
    let planted = posix_name("bellp");
    let path = dev_shm(&format!("{planted}.doorbell-data"));
    std::fs::write(&path, b"not a fifo").unwrap();
    let _rm = crate::RmOnDrop(path.clone());
    let space = dev_shm(&format!("{planted}.doorbell-space"));
    std::os::unix::fs::symlink("/dev/null", &space).unwrap();
    let _rm2 = crate::RmOnDrop(space);
    assert!(matches!(
        Doorbell::open(&planted),
        Err(Error::NotRegular { .. })
    ));
    assert!(matches!(
        Doorbell::create(&planted),
        Err(Error::AlreadyExists { .. })
    ));
    std::fs::remove_file(&path).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    assert!(matches!(
        Doorbell::open(&planted),
        Err(Error::Symlink { .. })
    ));
}

#[test]
fn doorbell_descriptors_are_checked() {
    let memfd = Memfd::create("not-a-bell", 4096).unwrap();
    let fd = memfd.as_fd().try_clone_to_owned().unwrap();
    let raw = fd.as_raw_fd();
    let bell = Doorbell::new().unwrap();
    let e = Doorbell::from_fds(bell.data_fd().try_clone_to_owned().unwrap(), fd).unwrap_err();
    assert!(
        matches!(e, Error::InvalidDescriptor { fd, .. } if fd == raw),
        "{e:?}"
    );
    for (data, space) in [(1, 2), (-1, 5), (1000, 1001)] {
        assert!(matches!(
            Doorbell::from_inherited(data, space),
            Err(Error::InvalidDescriptor { .. })
        ));
    }
    // Descriptors received from elsewhere are made non-blocking.
    let efd = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).unwrap();
    let efd2 = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).unwrap();
    let got = Doorbell::from_fds(efd, efd2).unwrap();
    let fl = rustix::fs::fcntl_getfl(got.data_fd()).unwrap();
    assert!(fl.contains(rustix::fs::OFlags::NONBLOCK));
    let fl = rustix::fs::fcntl_getfl(got.space_fd()).unwrap();
    assert!(fl.contains(rustix::fs::OFlags::NONBLOCK));
    assert!(got.name().is_none() && !got.is_owner());
    let fl = rustix::io::fcntl_getfd(bell.data_fd()).unwrap();
    assert!(fl.contains(rustix::io::FdFlags::CLOEXEC));
}
