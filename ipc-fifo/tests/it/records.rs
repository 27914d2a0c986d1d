use std::io::{Read, Write};
use std::time::{Duration, Instant};

use ipc_fifo::{Error, Fifo, FifoReader, FifoWriter, KeepAlive, RECORD_MAX, RecordReader};
use ipc_testkit::{Proc, SplitMix64, Watchdog, child, fnv1a64, role, test_path};

use crate::{CHILD_LIMIT, PATH_ENV, child_path, place};

const WRITERS: u32 = 8;
const RECORDS: u32 = 2_000;
const WRITER_ENV: &str = "IPC_FIFO_TEST_WRITER";

/// `[writer u32][seq u32][payload][fnv1a64 of the preceding bytes]`, random length up to the max.
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

fn writer_role() {
    let id: u32 = ipc_testkit::env_parse(WRITER_ENV).unwrap();
    let w = FifoWriter::open_timeout(child_path(), CHILD_LIMIT).unwrap();
    let mut rng = SplitMix64::new(u64::from(id));
    for seq in 0..RECORDS {
        w.write_record(&record(id, seq, &mut rng)).unwrap();
    }
}

#[test]
fn records_from_eight_writers_arrive_whole_and_in_order() {
    if role().as_deref() == Some("writer") {
        return writer_role();
    }
    let _wd = Watchdog::new("eight_writers", Duration::from_secs(120));
    let dir = place();
    let fifo = Fifo::create(dir.join("many").unwrap()).unwrap();
    // Keep-alive: a writer that finishes before another has opened must not end the stream.
    let reader = FifoReader::options()
        .keep_alive(KeepAlive::On)
        .open(fifo.path())
        .unwrap();
    let mut records = RecordReader::new(reader);
    let me = test_path!(records_from_eight_writers_arrive_whole_and_in_order);
    let procs: Vec<Proc> = (0..WRITERS)
        .map(|i| {
            Proc::spawn(
                child(&me, "writer")
                    .env(PATH_ENV, fifo.path())
                    .env(WRITER_ENV, i.to_string()),
            )
            .unwrap()
        })
        .collect();
    let mut next = vec![0u32; WRITERS as usize];
    let mut rngs: Vec<SplitMix64> = (0..WRITERS)
        .map(|i| SplitMix64::new(u64::from(i)))
        .collect();
    for _ in 0..WRITERS * RECORDS {
        let got = records
            .recv_timeout(CHILD_LIMIT)
            .unwrap()
            .expect("keep-alive reader never sees end-of-file");
        assert!(got.len() >= 16 && got.len() <= RECORD_MAX);
        let (body, sum) = got.split_at(got.len() - 8);
        assert_eq!(
            fnv1a64(body),
            u64::from_le_bytes(sum.try_into().unwrap()),
            "torn record"
        );
        let writer = u32::from_le_bytes(body[..4].try_into().unwrap());
        let seq = u32::from_le_bytes(body[4..8].try_into().unwrap());
        assert!(writer < WRITERS);
        assert_eq!(seq, next[writer as usize], "writer {writer} out of order");
        // And exactly the record that writer sent.
        let expect = record(writer, seq, &mut rngs[writer as usize]);
        assert_eq!(got, &expect[..]);
        next[writer as usize] += 1;
    }
    assert!(next.iter().all(|&n| n == RECORDS));
    for p in procs {
        p.expect_success(CHILD_LIMIT);
    }
    assert!(matches!(records.try_recv(), Err(Error::WouldBlock)));
}

#[test]
fn a_record_larger_than_pipe_buf_is_refused_and_nothing_is_written() {
    let dir = place();
    let fifo = Fifo::create(dir.join("big").unwrap()).unwrap();
    let mut records = RecordReader::new(FifoReader::try_open(fifo.path()).unwrap());
    let w = FifoWriter::try_open(fifo.path()).unwrap();
    // The limit is PIPE_BUF less the 4-byte length prefix.
    assert_eq!(RECORD_MAX, ipc_fifo::PIPE_BUF - ipc_fifo::HEADER_LEN);
    assert_eq!(RECORD_MAX, 4092);
    let big = vec![1u8; RECORD_MAX + 1];
    assert!(matches!(
        w.write_record(&big),
        Err(Error::MessageTooLarge { len, max }) if len == RECORD_MAX + 1 && max == RECORD_MAX
    ));
    assert!(matches!(
        w.try_write_record(&big),
        Err(Error::MessageTooLarge { .. })
    ));
    w.write_record(&big[..RECORD_MAX]).unwrap();
    w.write_record(b"").unwrap();
    drop(w);
    assert_eq!(records.recv().unwrap().unwrap().len(), RECORD_MAX);
    assert_eq!(records.recv().unwrap(), Some(&b""[..]));
    assert_eq!(records.recv().unwrap(), None);
}

#[test]
fn a_hostile_length_prefix_is_refused_before_allocation() {
    let dir = place();
    let fifo = Fifo::create(dir.join("hostile").unwrap()).unwrap();
    let mut records = RecordReader::framed(FifoReader::try_open(fifo.path()).unwrap(), 1 << 20);
    let mut w = FifoWriter::try_open(fifo.path()).unwrap();
    w.write_all(&u32::MAX.to_le_bytes()).unwrap();
    assert!(matches!(
        records.recv(),
        Err(Error::MessageTooLarge { len, max }) if len == u32::MAX as usize && max == 1 << 20
    ));
    drop((w, records));
    // A frame cut short by its writer is Truncated, not a hang or a short message.
    let cut = Fifo::create(dir.join("cut").unwrap()).unwrap();
    let mut records = RecordReader::new(FifoReader::try_open(cut.path()).unwrap());
    let mut w = FifoWriter::try_open(cut.path()).unwrap();
    w.write_all(&10u32.to_le_bytes()).unwrap();
    w.write_all(b"abc").unwrap();
    drop(w);
    assert!(matches!(records.recv(), Err(Error::Truncated)));
}

fn frame_writer_role() {
    let w = FifoWriter::open_timeout(child_path(), CHILD_LIMIT).unwrap();
    let mut rng = SplitMix64::new(7);
    for len in [0usize, 1, 4096, 65_536, 1 << 20, 3 * (1 << 20) + 17] {
        let mut f = vec![0u8; len];
        rng.fill(&mut f);
        w.write_frame(&f).unwrap();
    }
}

#[test]
fn frames_larger_than_pipe_buf_arrive_whole_from_one_writer() {
    if role().as_deref() == Some("frames") {
        return frame_writer_role();
    }
    let _wd = Watchdog::new("frames", Duration::from_secs(60));
    let dir = place();
    let fifo = Fifo::create(dir.join("frames").unwrap()).unwrap();
    let reader = FifoReader::try_open(fifo.path()).unwrap();
    let mut frames = RecordReader::framed(reader, 4 << 20);
    let p = Proc::spawn(
        child(
            &test_path!(frames_larger_than_pipe_buf_arrive_whole_from_one_writer),
            "frames",
        )
        .env(PATH_ENV, fifo.path()),
    )
    .unwrap();
    let mut rng = SplitMix64::new(7);
    for len in [0usize, 1, 4096, 65_536, 1 << 20, 3 * (1 << 20) + 17] {
        let mut f = vec![0u8; len];
        rng.fill(&mut f);
        let got = frames.recv_timeout(CHILD_LIMIT).unwrap().unwrap();
        assert_eq!(got.len(), len);
        assert_eq!(fnv1a64(got), fnv1a64(&f));
    }
    assert_eq!(frames.recv_timeout(CHILD_LIMIT).unwrap(), None);
    p.expect_success(CHILD_LIMIT);
}

#[test]
fn a_frame_begun_in_nonblocking_mode_is_finished_and_a_full_fifo_sends_nothing() {
    let _wd = Watchdog::new("nonblocking_frames", Duration::from_secs(30));
    let dir = place();
    let fifo = Fifo::create(dir.join("nbframes").unwrap()).unwrap();
    let mut frames = RecordReader::framed(FifoReader::try_open(fifo.path()).unwrap(), 2 << 20);
    let w = FifoWriter::try_open(fifo.path()).unwrap();
    w.set_nonblocking(true).unwrap();
    let mut big = vec![0u8; 1 << 20];
    SplitMix64::new(3).fill(&mut big);
    let sum = fnv1a64(&big);
    let writer = std::thread::spawn(move || {
        // Larger than the FIFO: it hits a full FIFO mid-frame and must finish anyway.
        w.write_frame(&big).unwrap();
        w
    });
    let got = frames
        .recv_timeout(Duration::from_secs(10))
        .unwrap()
        .unwrap();
    assert_eq!(got.len(), 1 << 20);
    assert_eq!(fnv1a64(got), sum);
    let w = writer.join().unwrap();
    // Fill the FIFO; then a frame that cannot start is WouldBlock and sends nothing.
    while w.try_write_record(&[9u8; 1000]).is_ok() {}
    while w.try_write_record(b"").is_ok() {}
    assert!(matches!(w.write_frame(b"nothing"), Err(Error::WouldBlock)));
    drop(w);
    let mut n = 0;
    while let Some(r) = frames.recv_timeout(Duration::from_secs(10)).unwrap() {
        assert!(r == &[9u8; 1000][..] || r.is_empty());
        n += 1;
    }
    assert!(n > 0);
}

/// `VmSize` of this process, in bytes.
fn vm_size() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kb * 1024
}

/// Child role, under `RLIMIT_AS` = what it uses now + 256 MiB: a header announcing 512 MiB
/// costs nothing before the bytes come (it would abort the process if it were allocated), and
/// a 16 MiB frame that does arrive is read whole.
fn announced_role() {
    use rustix::process::{Resource, Rlimit, setrlimit};
    let dir = crate::place();
    let fifo = Fifo::create(dir.join("big").unwrap()).unwrap();
    let limit = vm_size() + (256 << 20);
    setrlimit(
        Resource::As,
        Rlimit {
            current: Some(limit),
            maximum: Some(limit),
        },
    )
    .unwrap();
    let mut frames = RecordReader::framed(FifoReader::try_open(fifo.path()).unwrap(), 1 << 30);
    let w = FifoWriter::try_open(fifo.path()).unwrap();
    (&w).write_all(&(512u32 << 20).to_le_bytes()).unwrap();
    (&w).write_all(b"abc").unwrap();
    drop(w);
    assert!(matches!(frames.recv(), Err(Error::Truncated)));

    let mut frames = RecordReader::framed(FifoReader::try_open(fifo.path()).unwrap(), 1 << 30);
    let w = FifoWriter::try_open(fifo.path()).unwrap();
    let mut f = vec![0u8; 16 << 20];
    SplitMix64::new(5).fill(&mut f);
    let sum = fnv1a64(&f);
    let t = std::thread::spawn(move || w.write_frame(&f).unwrap());
    let got = frames.recv_timeout(CHILD_LIMIT).unwrap().unwrap();
    assert_eq!((got.len(), fnv1a64(got)), (16 << 20, sum));
    t.join().unwrap();
    assert_eq!(frames.recv_timeout(CHILD_LIMIT).unwrap(), None);
}

#[test]
fn a_frame_announced_but_not_sent_costs_no_memory() {
    if role().as_deref() == Some("announced") {
        return announced_role();
    }
    let _wd = Watchdog::new("announced", Duration::from_secs(60));
    Proc::spawn(&mut child(
        &test_path!(a_frame_announced_but_not_sent_costs_no_memory),
        "announced",
    ))
    .unwrap()
    .expect_success(CHILD_LIMIT);
}

/// Child role: between `recv_timeout`'s wait (which saw data) and its read, another reader of
/// the same FIFO takes the data (a seccomp hook on the read, so no timing is involved). The
/// receive must still end at its deadline, not block in `read`.
fn stolen_role() {
    use std::os::fd::AsRawFd;
    let dir = crate::place();
    let fifo = Fifo::create(dir.join("shared").unwrap()).unwrap();
    let ours = FifoReader::try_open(fifo.path()).unwrap();
    let thief = FifoReader::try_open(fifo.path()).unwrap();
    let w = FifoWriter::try_open(fifo.path()).unwrap();
    w.write_record(b"contested").unwrap();
    let fd = ours.as_raw_fd();
    let hooked = crate::intercept::on_read_of(fd, move || {
        let mut buf = [0u8; 64];
        let _ = (&thief).read(&mut buf); // takes everything there is
    });
    if !hooked {
        eprintln!("skipped: no seccomp user notification here");
        return;
    }
    let mut records = RecordReader::new(ours);
    let t = Instant::now();
    let r = records.recv_timeout(Duration::from_millis(300));
    assert!(matches!(r, Err(Error::TimedOut)), "{r:?}");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    drop(w);
}

#[test]
fn recv_timeout_ends_at_its_deadline_when_another_reader_takes_the_data() {
    if role().as_deref() == Some("stolen") {
        return stolen_role();
    }
    let _wd = Watchdog::new("stolen", Duration::from_secs(60));
    // A reader blocked in read() would never return: the child is killed at the bound.
    Proc::spawn(&mut child(
        &test_path!(recv_timeout_ends_at_its_deadline_when_another_reader_takes_the_data),
        "stolen",
    ))
    .unwrap()
    .expect_success(Duration::from_secs(20));
}

#[test]
fn a_record_reader_gives_its_reader_back_in_the_mode_it_came_in() {
    use rustix::fs::{OFlags, fcntl_getfl};
    let dir = crate::place();
    let fifo = Fifo::create(dir.join("mode").unwrap()).unwrap();
    let _reader = FifoReader::try_open(fifo.path()).unwrap(); // so that the writer may open
    let w = FifoWriter::try_open(fifo.path()).unwrap();
    for nonblocking in [false, true] {
        let r = FifoReader::try_open(fifo.path()).unwrap();
        r.set_nonblocking(nonblocking).unwrap();
        let mut records = RecordReader::new(r);
        w.write_record(b"one").unwrap();
        assert_eq!(records.recv().unwrap(), Some(&b"one"[..]));
        // Blocking or not, try_recv never waits and recv does.
        assert!(matches!(records.try_recv(), Err(Error::WouldBlock)));
        let r = records.into_inner();
        assert_eq!(
            fcntl_getfl(&r).unwrap().contains(OFlags::NONBLOCK),
            nonblocking
        );
    }
}

/// Frames of `stream` read by a framed reader of maximum `max` (the writer on another thread);
/// returns the largest allocation the reader made, after checking every frame and the end.
fn largest_allocation_reading(stream: Vec<u8>, max: usize) -> usize {
    let dir = crate::place();
    let fifo = Fifo::create(dir.join("frames").unwrap()).unwrap();
    let ((mut frames, p0), w) = (
        crate::tracked(|| RecordReader::framed(FifoReader::try_open(fifo.path()).unwrap(), max)),
        FifoWriter::try_open(fifo.path()).unwrap(),
    );
    let expect = stream.clone();
    let t = std::thread::spawn(move || (&w).write_all(&stream).unwrap());
    let mut peak = p0;
    let mut rest = &expect[..];
    loop {
        let want =
            (rest.len() >= 4).then(|| u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize);
        let (got, p) = crate::tracked(|| {
            frames.recv_timeout(CHILD_LIMIT).map(|f| {
                f.map(|f| {
                    (
                        f.len(),
                        want.is_some_and(|n| rest.len() >= 4 + n && f == &rest[4..4 + n]),
                    )
                })
            })
        });
        peak = peak.max(p);
        match got {
            Ok(Some((len, true))) => rest = &rest[4 + len..],
            Ok(None) => {
                assert!(rest.is_empty());
                break;
            }
            Err(Error::Truncated) => {
                assert!(rest.len() < 4 || rest.len() < 4 + want.unwrap());
                break;
            }
            Err(Error::MessageTooLarge { len, .. }) => {
                assert!(len > max);
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    t.join().unwrap();
    peak
}

#[test]
fn a_framed_reader_never_holds_more_than_its_maximum_or_twice_what_arrived() {
    let _wd = Watchdog::new("framed_capacity", Duration::from_secs(60));
    // Found by the fuzzer (fifo_framed_reader): the buffer's capacity doubled past both bounds.
    let input = include_bytes!("fuzz_regressions/framed_capacity_doubling.bin");
    let max = u32::from_le_bytes(input[..4].try_into().unwrap()) as usize;
    let reps = 1 + usize::from((input[4] >> 1) & 0x1f) * 8;
    let stream: Vec<u8> = input[5..].repeat(reps);
    let len = stream.len();
    let peak = largest_allocation_reading(stream, max);
    assert!(peak <= (64 << 10).max(2 * len), "{peak} bytes for {len}");

    // Frames just above the 64 KiB start, with a maximum a little above them.
    let mut stream = Vec::new();
    for n in [65_536usize, 99_000, 70_000] {
        stream.extend_from_slice(&(n as u32).to_le_bytes());
        stream.extend(std::iter::repeat_n(n as u8, n));
    }
    let max = 100_000;
    let peak = largest_allocation_reading(stream, max);
    assert!(
        peak <= max + ipc_fifo::HEADER_LEN,
        "{peak} bytes with a maximum of {max}"
    );
}
