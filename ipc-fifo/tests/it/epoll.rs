//! The runtime-agnostic recipe of the README, as a plain `epoll` loop would use it: ends in
//! non-blocking mode, registered edge-triggered, drained until `WouldBlock` on every readiness.
//! The loop relays records from writer processes to a reader process; every record arrives
//! once, whole, in its writer's order.

use std::collections::VecDeque;
use std::os::fd::AsFd;
use std::time::Duration;

use ipc_fifo::{Error, Fifo, FifoReader, FifoWriter, KeepAlive, RECORD_MAX, RecordReader};
use ipc_testkit::{Proc, SplitMix64, Watchdog, child, fnv1a64, role, test_path};
use rustix::event::epoll;

use crate::{CHILD_LIMIT, PATH_ENV, child_path, place};

const WRITERS: u32 = 3;
const RECORDS: u32 = 3_000;
const WRITER_ENV: &str = "IPC_FIFO_TEST_WRITER";

/// `[writer u32][seq u32][payload][fnv1a64 of the preceding bytes]`, random length.
fn record(writer: u32, seq: u32, rng: &mut SplitMix64) -> Vec<u8> {
    let len = rng.range(0, (RECORD_MAX - 16) as u64) as usize;
    let mut r = Vec::with_capacity(len + 16);
    r.extend_from_slice(&writer.to_le_bytes());
    r.extend_from_slice(&seq.to_le_bytes());
    let start = r.len();
    r.resize(start + len, 0);
    rng.fill(&mut r[start..]);
    let sum = fnv1a64(&r);
    r.extend_from_slice(&sum.to_le_bytes());
    r
}

/// Checks a record's checksum and returns (writer, seq).
fn check(r: &[u8]) -> (u32, u32) {
    let (body, sum) = r.split_at(r.len() - 8);
    assert_eq!(
        fnv1a64(body),
        u64::from_le_bytes(sum.try_into().unwrap()),
        "torn"
    );
    let w = u32::from_le_bytes(body[..4].try_into().unwrap());
    let s = u32::from_le_bytes(body[4..8].try_into().unwrap());
    (w, s)
}

fn writer_role() {
    let id: u32 = ipc_testkit::env_parse(WRITER_ENV).unwrap();
    let w = FifoWriter::open_timeout(child_path(), CHILD_LIMIT).unwrap();
    let mut rng = SplitMix64::new(u64::from(id));
    for seq in 0..RECORDS {
        w.write_record(&record(id, seq, &mut rng)).unwrap();
    }
}

/// Child role: reads what the loop relays until end-of-file and checks every record.
fn sink_role() {
    let r = FifoReader::open_timeout(child_path(), CHILD_LIMIT).unwrap();
    let mut records = RecordReader::new(r);
    let mut next = [0u32; WRITERS as usize];
    let mut rngs: Vec<SplitMix64> = (0..WRITERS).map(|i| SplitMix64::new(i.into())).collect();
    while let Some(got) = records.recv_timeout(CHILD_LIMIT).unwrap() {
        let (w, s) = check(got);
        assert_eq!(
            s, next[w as usize],
            "writer {w}: lost or repeated in the relay"
        );
        assert_eq!(got, &record(w, s, &mut rngs[w as usize])[..]);
        next[w as usize] += 1;
    }
    assert!(next.iter().all(|&n| n == RECORDS), "{next:?}");
}

const IN: u64 = 0;
const OUT: u64 = 1;

#[test]
fn a_plain_epoll_loop_relays_records_between_processes_with_nonblocking_ends() {
    match role().as_deref() {
        Some("writer") => return writer_role(),
        Some("sink") => return sink_role(),
        _ => {}
    }
    let _wd = Watchdog::new("epoll_relay", Duration::from_secs(120));
    let me = test_path!(a_plain_epoll_loop_relays_records_between_processes_with_nonblocking_ends);
    let dir = place();
    let inbox = Fifo::create(dir.join("in").unwrap()).unwrap();
    let outbox = Fifo::create(dir.join("out").unwrap()).unwrap();

    // 1. Non-blocking ends: the record reader switches its (keep-alive) reader itself; the
    //    writer is switched by hand.
    let reader = FifoReader::options()
        .keep_alive(KeepAlive::On)
        .open(inbox.path())
        .unwrap();
    let mut records = RecordReader::new(reader);
    let sink = Proc::spawn(child(&me, "sink").env(PATH_ENV, outbox.path())).unwrap();
    let writer = FifoWriter::open_timeout(outbox.path(), CHILD_LIMIT).unwrap();
    writer.set_nonblocking(true).unwrap();

    // 2. Registered edge-triggered: each readiness is reported once.
    let ep = epoll::create(epoll::CreateFlags::CLOEXEC).unwrap();
    let et = epoll::EventFlags::ET;
    let (rfd, wfd) = (records.get_ref().as_fd(), writer.as_fd());
    epoll::add(
        &ep,
        rfd,
        epoll::EventData::new_u64(IN),
        epoll::EventFlags::IN | et,
    )
    .unwrap();
    epoll::add(
        &ep,
        wfd,
        epoll::EventData::new_u64(OUT),
        epoll::EventFlags::OUT | et,
    )
    .unwrap();

    let writers: Vec<Proc> = (0..WRITERS)
        .map(|i| {
            let mut cmd = child(&me, "writer");
            cmd.env(PATH_ENV, inbox.path())
                .env(WRITER_ENV, i.to_string());
            Proc::spawn(&mut cmd).unwrap()
        })
        .collect();

    let total = (WRITERS * RECORDS) as usize;
    let (mut received, mut sent) = (0usize, 0usize);
    let mut queue: VecDeque<Vec<u8>> = VecDeque::new();
    let (mut wakeups, mut would_block_out) = (0u64, 0u64);
    let mut events = [epoll::Event {
        flags: epoll::EventFlags::empty(),
        data: epoll::EventData::new_u64(0),
    }; 4];
    let limit = rustix::event::Timespec {
        tv_sec: CHILD_LIMIT.as_secs() as i64,
        tv_nsec: 0,
    };
    while sent < total {
        let n = loop {
            match epoll::wait(&ep, &mut events, Some(&limit)) {
                Err(rustix::io::Errno::INTR) => continue,
                r => break r.unwrap(),
            }
        };
        assert!(n > 0, "the loop stalled: {received} in, {sent} out");
        wakeups += 1;
        for ev in &events[..n] {
            if ev.data.u64() == IN {
                // 3. Drain until WouldBlock: an edge is not repeated for what is left.
                loop {
                    match records.try_recv() {
                        Ok(Some(r)) => {
                            check(r);
                            queue.push_back(r.to_vec());
                            received += 1;
                        }
                        Ok(None) => panic!("a keep-alive reader saw end-of-file"),
                        Err(Error::WouldBlock) => break,
                        Err(e) => panic!("{e}"),
                    }
                }
            }
        }
        // Send what is queued until the FIFO is full; its next "writable" edge resumes.
        while let Some(r) = queue.front() {
            match writer.try_write_record(r) {
                Ok(()) => {
                    queue.pop_front();
                    sent += 1;
                }
                Err(Error::WouldBlock) => {
                    would_block_out += 1;
                    break;
                }
                Err(e) => panic!("{e}"),
            }
        }
    }
    assert_eq!((received, sent), (total, total));
    eprintln!("{wakeups} wake-ups, the outbox was full {would_block_out} times");
    for p in writers {
        p.expect_success(CHILD_LIMIT);
    }
    drop(writer); // end-of-file for the sink
    sink.expect_success(CHILD_LIMIT);
}
