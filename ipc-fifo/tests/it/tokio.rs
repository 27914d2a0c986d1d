//! The `tokio` feature: async ends, opens, records and frames, across real processes, on a
//! current-thread runtime (where a blocking call would stall everything), every await bounded.
#![cfg(feature = "tokio")]

use std::future::Future;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::path::Path;
use std::pin::pin;
use std::process::{ChildStdin, ChildStdout, Stdio};
use std::task::Poll;
use std::time::{Duration, Instant};

use ipc_fifo::{
    AsyncFifoReader, AsyncFifoWriter, AsyncRecordReader, Error, Fifo, FifoReader, FifoWriter,
    KeepAlive, RecordReader,
};
use ipc_testkit::{Proc, SplitMix64, Watchdog, child, fnv1a64, role, test_path};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{CHILD_LIMIT, PATH_ENV, child_path, place};

/// The bound of every await in these tests.
const LIMIT: Duration = Duration::from_secs(20);

/// A current-thread runtime: a call that blocks its thread stalls every task.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// `f`, failing the test if it takes longer than [`LIMIT`].
async fn bounded<F: Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(LIMIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: not done within {LIMIT:?}"),
    }
}

/// Polls `f` exactly once (with the task's own waker) and says whether it was pending.
async fn poll_once<F: Future>(f: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    let mut f = Some(f);
    std::future::poll_fn(|cx| Poll::Ready(f.take().unwrap().poll(cx))).await
}

/// Proves the runtime's one thread is free: another task runs `n` turns meanwhile.
async fn runtime_is_free(n: usize) {
    let turns = tokio::spawn(async move {
        for _ in 0..n {
            tokio::task::yield_now().await;
        }
        n
    });
    assert_eq!(bounded("other task", turns).await.unwrap(), n);
}

fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    SplitMix64::new(seed).fill(&mut v);
    v
}

const BYTES: usize = 1 << 20;

/// Child roles of the open tests: the late peer, blocking and sync (a plain program).
fn late_peer_role(which: &str) {
    let path = child_path();
    match which {
        // The kernel's blocking open(O_WRONLY): released by the async reader's open.
        "blocking-writer" => {
            let mut w = FifoWriter::open(&path).unwrap();
            w.write_all(&payload(1, BYTES)).unwrap();
        }
        // A blocking open(O_RDONLY) waits inside the kernel, where inotify does not see it:
        // the async writer must find it anyway (its retry).
        "blocking-reader" => {
            let mut r = std::fs::File::open(&path).unwrap();
            let mut got = Vec::new();
            r.read_to_end(&mut got).unwrap();
            assert_eq!(got.len(), BYTES);
            assert_eq!(fnv1a64(&got), fnv1a64(&payload(2, BYTES)));
        }
        _ => unreachable!(),
    }
}

#[test]
fn async_opens_wait_for_a_late_peer_without_blocking_the_runtime() {
    if let Some(r) = role() {
        return late_peer_role(&r);
    }
    let _wd = Watchdog::new("async_late_peer", Duration::from_secs(120));
    let me = test_path!(async_opens_wait_for_a_late_peer_without_blocking_the_runtime);
    let dir = place();
    let fifo = Fifo::create(dir.join("late").unwrap()).unwrap();
    let path = fifo.path().to_owned();
    runtime().block_on(async {
        // A reader waiting for its first writer.
        let p = path.clone();
        let open = tokio::spawn(async move { AsyncFifoReader::open(&p).await });
        runtime_is_free(1000).await;
        assert!(!open.is_finished(), "the reader's open did not wait");
        let writer = Proc::spawn(child(&me, "blocking-writer").env(PATH_ENV, &path)).unwrap();
        let mut reader = bounded("reader open", open).await.unwrap().unwrap();
        let mut got = Vec::new();
        bounded("read", reader.read_to_end(&mut got)).await.unwrap();
        assert_eq!(
            (got.len(), fnv1a64(&got)),
            (BYTES, fnv1a64(&payload(1, BYTES)))
        );
        writer.expect_success(CHILD_LIMIT);
        drop(reader);

        // A writer waiting for a reader (one blocked inside its own open, at that).
        let p = path.clone();
        let open = tokio::spawn(async move { AsyncFifoWriter::open(&p).await });
        runtime_is_free(1000).await;
        assert!(!open.is_finished(), "the writer's open did not wait");
        let reader = Proc::spawn(child(&me, "blocking-reader").env(PATH_ENV, &path)).unwrap();
        let mut writer = bounded("writer open", open).await.unwrap().unwrap();
        // 1 MiB through a 64 KiB FIFO: the writer waits for room, the runtime stays free.
        let data = payload(2, BYTES);
        let write = tokio::spawn(async move {
            writer.write_all(&data).await.unwrap();
            writer.flush().await.unwrap();
        });
        runtime_is_free(100).await;
        bounded("write", write).await.unwrap();
        reader.expect_success(CHILD_LIMIT);
    });
}

#[test]
fn async_opens_wait_for_the_fifo_and_its_directory_to_appear() {
    let _wd = Watchdog::new("async_appear", Duration::from_secs(60));
    let base = place();
    let place_path = base.join("later").unwrap();
    let path = place_path.join("fifo");
    runtime().block_on(async {
        let (p, q) = (path.clone(), path.clone());
        let reader = tokio::spawn(async move { AsyncFifoReader::open_timeout(&p, LIMIT).await });
        let writer = tokio::spawn(async move { AsyncFifoWriter::open_timeout(&q, LIMIT).await });
        runtime_is_free(1000).await;
        assert!(!reader.is_finished() && !writer.is_finished());
        // Nothing was there, not even the directory; now both appear.
        let (d, _) = ipc_fifo::PrivateDir::open_or_create(&place_path).unwrap();
        let fifo = Fifo::create(&path).unwrap();
        let reader = bounded("reader", reader).await.unwrap().unwrap();
        let mut writer = bounded("writer", writer).await.unwrap().unwrap();
        let mut records = AsyncRecordReader::new(reader);
        bounded("record", writer.write_record(b"both came"))
            .await
            .unwrap();
        let got = bounded("recv", records.recv()).await.unwrap();
        assert_eq!(got, Some(&b"both came"[..]));
        drop((writer, records, fifo, d));
    });
}

#[test]
fn async_open_timeouts_are_the_typed_errors_and_leave_the_runtime_free() {
    let _wd = Watchdog::new("async_timeouts", Duration::from_secs(60));
    let dir = place();
    let fifo = Fifo::create(dir.join("alone").unwrap()).unwrap();
    let short = Duration::from_millis(200);
    // The reader's wait below must leave no copy of its end in a child being spawned by another
    // test thread: the writer's waits after it must find no reader.
    let _gate = ipc_testkit::no_spawn_in_flight();
    runtime().block_on(async {
        let other = tokio::spawn(runtime_is_free(10_000));
        let t = Instant::now();
        let r = bounded("reader", AsyncFifoReader::open_timeout(fifo.path(), short)).await;
        assert!(matches!(r, Err(Error::TimedOut)), "{r:?}");
        assert!(t.elapsed() >= short);
        let t = Instant::now();
        let r = bounded("writer", AsyncFifoWriter::open_timeout(fifo.path(), short)).await;
        assert!(matches!(r, Err(Error::TimedOut)), "{r:?}");
        assert!(t.elapsed() >= short);
        let missing = dir.join("missing").unwrap();
        let r = bounded("missing", AsyncFifoWriter::open_timeout(&missing, short)).await;
        assert!(
            matches!(
                r,
                Err(Error::NotFound {
                    dir_exists: true,
                    ..
                })
            ),
            "{r:?}"
        );
        let r = bounded("missing", AsyncFifoReader::open_timeout(&missing, short)).await;
        assert!(matches!(r, Err(Error::NotFound { .. })), "{r:?}");
        assert!(matches!(
            AsyncFifoWriter::try_open(fifo.path()),
            Err(Error::NoReader)
        ));
        assert!(matches!(
            AsyncFifoReader::try_open(&missing),
            Err(Error::NotFound { .. })
        ));
        // Zero: an answer at once. Bad input: the typed error, before any wait.
        let r = AsyncFifoWriter::open_timeout(fifo.path(), Duration::ZERO).await;
        assert!(matches!(r, Err(Error::TimedOut)), "{r:?}");
        let r = AsyncFifoReader::open(dir.path().join("")).await;
        assert!(matches!(r, Err(Error::InvalidName { .. })), "{r:?}");
        std::fs::write(dir.join("file").unwrap(), b"not a fifo").unwrap();
        let r = AsyncFifoWriter::open(dir.join("file").unwrap()).await;
        assert!(matches!(r, Err(Error::NotAFifo { .. })), "{r:?}");
        bounded("other task", other).await.unwrap();
    });
}

#[test]
fn async_types_outside_a_runtime_are_an_error_not_a_panic() {
    let dir = place();
    let fifo = Fifo::create(dir.join("no-rt").unwrap()).unwrap();
    let r = AsyncFifoReader::try_open(fifo.path());
    let Err(Error::Io(e)) = r else {
        panic!("{r:?}")
    };
    assert!(e.to_string().contains("tokio runtime"), "{e}");
    let r = AsyncFifoReader::new(FifoReader::try_open(fifo.path()).unwrap());
    assert!(matches!(r, Err(Error::Io(_))), "{r:?}");
}

/// How many `read`-like (`syscr`) and `write`-like (`syscw`) system calls this thread has made
/// (`/proc/thread-self/io`): a wait that spins instead of sleeping makes thousands.
fn calls_of_this_thread() -> (u64, u64) {
    let io = std::fs::read_to_string("/proc/thread-self/io").unwrap();
    let field = |name: &str| -> u64 {
        io.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    (field("syscr:"), field("syscw:"))
}

/// Lets the runtime poll its reactor once (a task that yields is woken only after that).
async fn reactor_turn() {
    tokio::task::yield_now().await;
}

/// The most calls an idle wait may make (an attempt, a re-registration, the clock's reads).
const IDLE_CALLS: u64 = 50;

/// Child role (a process of its own: a read that spun would stall it, and is killed at the
/// bound). End-of-file, a writer back after it, a writer that has not written yet: tokio keeps
/// a hang-up as final, and the reader must not spin on it.
fn hang_up_reader_role() {
    let dir = place();
    let fifo = Fifo::create(dir.join("hup").unwrap()).unwrap();
    runtime().block_on(async {
        let mut r = AsyncFifoReader::try_open(fifo.path()).unwrap();
        let mut buf = [0u8; 64];
        // No writer yet: no false end-of-file, the read waits.
        let t = tokio::time::timeout(Duration::from_millis(100), r.read(&mut buf)).await;
        assert!(t.is_err(), "a read before any writer returned {t:?}");
        for round in 0..3u8 {
            let w = FifoWriter::try_open(fifo.path()).unwrap();
            (&w).write_all(&[round; 3]).unwrap();
            drop(w);
            assert_eq!(bounded("data", r.read(&mut buf)).await.unwrap(), 3);
            assert_eq!(buf[..3], [round; 3]);
            assert_eq!(bounded("eof", r.read(&mut buf)).await.unwrap(), 0);
            // A writer comes back and sends nothing yet: the read waits (here on a
            // current-thread runtime: if it spun, the timeout could never fire).
            let w = FifoWriter::try_open(fifo.path()).unwrap();
            let (reads, _) = calls_of_this_thread();
            let t = tokio::time::timeout(Duration::from_millis(200), r.read(&mut buf)).await;
            assert!(t.is_err(), "round {round}: {t:?}");
            // And it slept: tokio's budget would let a spinning read time out too.
            let spent = calls_of_this_thread().0 - reads;
            assert!(
                spent < IDLE_CALLS,
                "round {round}: {spent} reads while waiting"
            );
            // And its data arrives.
            let send = tokio::spawn(async move {
                tokio::task::yield_now().await;
                (&w).write_all(b"back").unwrap();
            });
            assert_eq!(bounded("back", r.read(&mut buf)).await.unwrap(), 4);
            assert_eq!(&buf[..4], b"back");
            send.await.unwrap();
            assert_eq!(bounded("eof again", r.read(&mut buf)).await.unwrap(), 0);
        }
    });
}

/// Child role: the writer's side of the same: its reader leaves (`POLLERR`, which tokio keeps),
/// a new reader comes, and the writer fills the FIFO: it must wait, not spin.
fn hang_up_writer_role() {
    let dir = place();
    let fifo = Fifo::create(dir.join("err").unwrap()).unwrap();
    runtime().block_on(async {
        let mut first = RecordReader::new(FifoReader::try_open(fifo.path()).unwrap());
        let mut w = AsyncFifoWriter::try_open(fifo.path()).unwrap();
        bounded("record", w.write_record(b"to the first"))
            .await
            .unwrap();
        // (Data left in a FIFO outlives its readers while a writer has it open: take it.)
        assert_eq!(first.recv().unwrap(), Some(&b"to the first"[..]));
        drop(first);
        // Let the reactor look while there is no reader: it sees the hang-up, and keeps it.
        reactor_turn().await;
        // No reader: the record is refused (and the hang-up is seen).
        let r = bounded("no reader", w.write_record(b"to nobody")).await;
        assert!(matches!(r, Err(Error::NoReader)), "{r:?}");
        for round in 0..3 {
            let mut second = RecordReader::new(FifoReader::try_open(fifo.path()).unwrap());
            // Fill the FIFO (empty records fill its last page), then a write must wait, and
            // sleep while it waits (tokio's budget would let a spinning one time out too).
            let mut sent = 0usize;
            while w.try_write_record(&[7u8; 1000]).is_ok() {
                sent += 1;
            }
            while w.try_write_record(b"").is_ok() {
                sent += 1;
            }
            let (_, writes) = calls_of_this_thread();
            let write = w.write_record(&[7u8; 1000]);
            let t = tokio::time::timeout(Duration::from_millis(200), write).await;
            assert!(t.is_err(), "round {round}: {t:?}");
            let spent = calls_of_this_thread().1 - writes;
            assert!(
                spent < IDLE_CALLS,
                "round {round}: {spent} writes while waiting"
            );
            assert!(sent > 0, "round {round}");
            // Now the reader takes everything; the writer goes on.
            for _ in 0..sent {
                let got = second.recv().unwrap().unwrap();
                assert!(got == &[7u8; 1000][..] || got.is_empty());
            }
            bounded("after", w.write_record(b"after")).await.unwrap();
            assert_eq!(second.recv().unwrap(), Some(&b"after"[..]));
            drop(second);
            reactor_turn().await;
            let r = bounded("no reader", w.write_record(b"to nobody")).await;
            assert!(matches!(r, Err(Error::NoReader)), "{r:?}");
        }
    });
}

#[test]
fn a_hang_up_that_tokio_keeps_does_not_make_reads_or_writes_spin() {
    match role().as_deref() {
        Some("hup-reader") => return hang_up_reader_role(),
        Some("hup-writer") => return hang_up_writer_role(),
        _ => {}
    }
    let _wd = Watchdog::new("hang_up", Duration::from_secs(120));
    let me = test_path!(a_hang_up_that_tokio_keeps_does_not_make_reads_or_writes_spin);
    for r in ["hup-reader", "hup-writer"] {
        Proc::spawn(&mut child(&me, r))
            .unwrap()
            .expect_success(CHILD_LIMIT);
    }
}

const WRITER_ENV: &str = "IPC_FIFO_TEST_WRITER";
const WRITERS: u32 = 4;
const RECORDS: u32 = 1_500;

/// `[writer u32][seq u32][payload][fnv1a64]`, random length.
fn record(writer: u32, seq: u32, rng: &mut SplitMix64) -> Vec<u8> {
    let len = rng.range(0, (ipc_fifo::RECORD_MAX - 16) as u64) as usize;
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

/// Child role: an async writer of records whose writes are cancelled at random moments (each
/// cancelled record is sent again: a record is written whole or not at all).
fn async_record_writer_role() {
    let id: u32 = ipc_testkit::env_parse(WRITER_ENV).unwrap();
    runtime().block_on(async {
        let mut w = bounded("open", AsyncFifoWriter::open(child_path()))
            .await
            .unwrap();
        let mut rng = SplitMix64::new(u64::from(id));
        let mut pace = SplitMix64::new(u64::from(id) + 100);
        let mut cancelled = 0;
        for seq in 0..RECORDS {
            let r = record(id, seq, &mut rng);
            loop {
                let nap = Duration::from_micros(pace.range(0, 200));
                tokio::select! {
                    biased;
                    done = w.write_record(&r) => { done.unwrap(); break; }
                    _ = tokio::time::sleep(nap) => cancelled += 1,
                }
                assert!(cancelled < 1_000_000);
            }
        }
        eprintln!("writer {id}: {cancelled} writes cancelled and sent again");
    });
}

#[test]
fn async_records_from_many_processes_arrive_whole_once_and_in_order_through_cancelled_receives() {
    if role().as_deref() == Some("async-writer") {
        return async_record_writer_role();
    }
    let _wd = Watchdog::new("async_records", Duration::from_secs(180));
    // Every record crosses processes once, whole, in each writer's order, although writes and
    // receives are cancelled all along.
    let me = test_path!(
        async_records_from_many_processes_arrive_whole_once_and_in_order_through_cancelled_receives
    );
    let dir = place();
    let fifo = Fifo::create(dir.join("many").unwrap()).unwrap();
    runtime().block_on(async {
        let reader = FifoReader::options()
            .keep_alive(KeepAlive::On)
            .open_timeout_async(fifo.path(), LIMIT)
            .await
            .unwrap();
        let mut records = AsyncRecordReader::new(reader);
        let procs: Vec<Proc> = (0..WRITERS)
            .map(|i| {
                let mut cmd = child(&me, "async-writer");
                cmd.env(PATH_ENV, fifo.path())
                    .env(WRITER_ENV, i.to_string());
                Proc::spawn(&mut cmd).unwrap()
            })
            .collect();
        let mut next = vec![0u32; WRITERS as usize];
        let mut rngs: Vec<SplitMix64> = (0..WRITERS).map(|i| SplitMix64::new(i.into())).collect();
        let mut pace = SplitMix64::new(99);
        let (mut got_n, mut cancelled) = (0, 0u64);
        let start = Instant::now();
        while got_n < WRITERS * RECORDS {
            assert!(
                start.elapsed() < Duration::from_secs(150),
                "stalled at {got_n}"
            );
            // Half the receives are polled once by hand and dropped if they are pending (then
            // often with part of a record read); the others wait.
            let got = if pace.next_u64() & 1 == 0 {
                let mut recv = pin!(records.recv());
                match poll_once(recv.as_mut()).await {
                    Poll::Ready(got) => got.unwrap().expect("keep-alive: no end-of-file").to_vec(),
                    Poll::Pending => {
                        cancelled += 1;
                        tokio::task::yield_now().await;
                        continue;
                    }
                }
            } else {
                let got = bounded("recv", records.recv()).await.unwrap();
                got.expect("keep-alive: no end-of-file").to_vec()
            };
            let (body, sum) = got.split_at(got.len() - 8);
            assert_eq!(fnv1a64(body), u64::from_le_bytes(sum.try_into().unwrap()));
            let writer = u32::from_le_bytes(body[..4].try_into().unwrap());
            let seq = u32::from_le_bytes(body[4..8].try_into().unwrap());
            assert_eq!(
                seq, next[writer as usize],
                "writer {writer}: lost or repeated"
            );
            assert_eq!(got, record(writer, seq, &mut rngs[writer as usize]));
            next[writer as usize] += 1;
            got_n += 1;
        }
        eprintln!("{cancelled} receives cancelled");
        for p in procs {
            p.expect_success(CHILD_LIMIT);
        }
        assert!(matches!(records.try_recv(), Err(Error::WouldBlock)));
    });
}

/// A child's stdin and stdout, for steps in lockstep with it.
struct Lockstep {
    to: ChildStdin,
    from: BufReader<ChildStdout>,
}

impl Lockstep {
    fn of(p: &mut Proc) -> Lockstep {
        Lockstep {
            to: p.inner().stdin.take().unwrap(),
            from: BufReader::new(p.inner().stdout.take().unwrap()),
        }
    }
    /// Tells the child to go on (a line on its stdin).
    fn go(&mut self) {
        writeln!(self.to, "go").unwrap();
        self.to.flush().unwrap();
    }
    /// Waits for the child's next line that starts with `marker` (the harness prints lines
    /// of its own). Callers run under a `Watchdog`.
    fn expect(&mut self, marker: &str) -> String {
        let mut line = String::new();
        loop {
            line.clear();
            assert!(
                self.from.read_line(&mut line).unwrap() > 0,
                "child gone before {marker}"
            );
            if line.starts_with(marker) {
                return line.trim_end().to_owned();
            }
        }
    }
}

/// Child side of [`Lockstep::go`].
fn wait_for_go() {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "go");
}

/// The frames of [`cut_frame_writer_role`] (payload length) and where each is cut: inside the
/// header, right after it, inside the payload, one byte before its end. (The first part of
/// each fits into the FIFO: the reader takes it only when the test polls it.)
const CUTS: [(usize, usize); 4] = [
    (100_000, 2),
    (100_000, 4),
    (100_000, 50_000),
    (60_000, 60_003),
];

/// Child role: sends the frames of [`CUTS`] in two parts each, saying `part` after the first
/// part and waiting for `go` before the second.
fn cut_frame_writer_role() {
    let mut w = FifoWriter::open_timeout(child_path(), CHILD_LIMIT).unwrap();
    for (i, (len, cut)) in CUTS.into_iter().enumerate() {
        let frame = payload(i as u64, len);
        let mut bytes = (frame.len() as u32).to_le_bytes().to_vec();
        bytes.extend_from_slice(&frame);
        w.write_all(&bytes[..cut]).unwrap();
        crate::say("part");
        wait_for_go();
        w.write_all(&bytes[cut..]).unwrap();
    }
}

#[test]
fn a_dropped_receive_loses_no_bytes_and_the_next_returns_the_frame_whole() {
    if role().as_deref() == Some("cut-writer") {
        return cut_frame_writer_role();
    }
    let _wd = Watchdog::new("dropped_recv", Duration::from_secs(60));
    let me = test_path!(a_dropped_receive_loses_no_bytes_and_the_next_returns_the_frame_whole);
    let dir = place();
    let fifo = Fifo::create(dir.join("cut").unwrap()).unwrap();
    runtime().block_on(async {
        let reader = AsyncFifoReader::try_open(fifo.path()).unwrap();
        let mut frames = AsyncRecordReader::framed(reader, 1 << 20);
        let mut cmd = child(&me, "cut-writer");
        cmd.env(PATH_ENV, fifo.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        let mut p = Proc::spawn(&mut cmd).unwrap();
        let mut step = Lockstep::of(&mut p);
        // A second reader of the FIFO that only asks how many bytes it holds (FIONREAD).
        let probe = FifoReader::try_open(fifo.path()).unwrap();
        for (i, (len, cut)) in CUTS.into_iter().enumerate() {
            step.expect("part");
            // The first part is in the FIFO. A receive reads it, finds no whole frame, and is
            // dropped: polled by hand until it has taken every byte of the part.
            {
                let mut recv = pin!(frames.recv());
                let took = Instant::now();
                loop {
                    assert!(poll_once(recv.as_mut()).await.is_pending(), "frame {i}");
                    let left = rustix::io::ioctl_fionread(&probe).unwrap();
                    if left == 0 {
                        break;
                    }
                    assert!(took.elapsed() < LIMIT, "the receive never read the part");
                    tokio::task::yield_now().await;
                }
            }
            step.go();
            let got = bounded("frame", frames.recv()).await.unwrap().unwrap();
            assert_eq!(got.len(), len, "frame {i} cut at {cut}");
            assert_eq!(fnv1a64(got), fnv1a64(&payload(i as u64, len)), "frame {i}");
        }
        assert_eq!(bounded("end", frames.recv()).await.unwrap(), None);
        p.expect_success(CHILD_LIMIT);
    });
}

/// Child role: a blocking reader of frames that waits for `go` before reading anything, then
/// checks `[index u32][payload][fnv1a64]` frames until end-of-file, and reports each index.
fn paused_frame_reader_role() {
    let r = FifoReader::open_timeout(child_path(), CHILD_LIMIT).unwrap();
    let mut frames = RecordReader::framed(r, 8 << 20);
    crate::say("open");
    wait_for_go();
    let mut n = 0u32;
    while let Some(f) = frames.recv_timeout(CHILD_LIMIT).unwrap() {
        let (body, sum) = f.split_at(f.len() - 8);
        assert_eq!(
            fnv1a64(body),
            u64::from_le_bytes(sum.try_into().unwrap()),
            "torn frame"
        );
        let index = u32::from_le_bytes(body[..4].try_into().unwrap());
        assert_eq!(index, n, "a frame lost or repeated");
        n += 1;
    }
    crate::say(&format!("frames {n}"));
}

/// A descriptor that only asks how many bytes the FIFO holds (`FIONREAD`): a reader opened for
/// the question (the writer is borrowed by the future being polled).
fn fifo_probe(fifo: &Fifo) -> FifoReader {
    FifoReader::try_open(fifo.path()).unwrap()
}

/// `[index u32][payload][fnv1a64 of the rest]`, `len` bytes of payload.
fn frame(index: u32, len: usize) -> Vec<u8> {
    let mut f = index.to_le_bytes().to_vec();
    f.extend_from_slice(&payload(u64::from(index) + 1000, len));
    let sum = fnv1a64(&f);
    f.extend_from_slice(&sum.to_le_bytes());
    f
}

#[test]
fn a_dropped_frame_write_keeps_its_unsent_rest_and_the_frame_arrives_whole() {
    if role().as_deref() == Some("paused-reader") {
        return paused_frame_reader_role();
    }
    let _wd = Watchdog::new("dropped_frame", Duration::from_secs(120));
    let me = test_path!(a_dropped_frame_write_keeps_its_unsent_rest_and_the_frame_arrives_whole);
    let dir = place();
    let fifo = Fifo::create(dir.join("frames").unwrap()).unwrap();
    let mut cmd = child(&me, "paused-reader");
    cmd.env(PATH_ENV, fifo.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut p = Proc::spawn(&mut cmd).unwrap();
    let mut step = Lockstep::of(&mut p);
    runtime().block_on(async {
        let mut w = bounded("open", AsyncFifoWriter::open(fifo.path()))
            .await
            .unwrap();
        step.expect("open");
        // Frame 0 (1 MiB) into a FIFO nobody reads yet: the first poll sends what fits, then
        // waits; the future is dropped there.
        let f0 = frame(0, 1 << 20);
        let total = f0.len() + ipc_fifo::HEADER_LEN;
        let took = Instant::now();
        {
            let mut write = pin!(w.write_frame(&f0));
            // Polled by hand until its first bytes are out (the reactor may not have said
            // "writable" yet on the first poll).
            loop {
                assert!(poll_once(write.as_mut()).await.is_pending());
                if rustix::io::ioctl_fionread(fifo_probe(&fifo)).unwrap() > 0 {
                    break;
                }
                assert!(took.elapsed() < LIMIT, "the frame never began");
                tokio::task::yield_now().await;
            }
        }
        let in_fifo = rustix::io::ioctl_fionread(w.as_fd()).unwrap() as usize;
        assert_eq!(w.unsent() + in_fifo, total, "the rest is kept exactly");
        // Frame 1 cannot begin while frame 0's rest waits (the FIFO is full): dropped after a
        // poll, it sent nothing and keeps nothing of its own.
        let f1 = frame(1, 10);
        let unsent = w.unsent();
        {
            let mut write = pin!(w.write_frame(&f1));
            assert!(poll_once(write.as_mut()).await.is_pending());
        }
        assert_eq!(w.unsent(), unsent);
        // The reader starts; frame 0's rest goes first, then frame 1 (sent again: it had not
        // begun), then frames whose writes are cancelled at random moments.
        step.go();
        bounded("flush", w.flush()).await.unwrap();
        assert_eq!(w.unsent(), 0);
        bounded("frame 1", w.write_frame(&f1)).await.unwrap();
        let mut pace = SplitMix64::new(5);
        let (mut index, mut begun_and_dropped, mut dropped_unbegun) = (2u32, 0, 0);
        while index < 60 {
            let f = frame(index, pace.range(0, 300_000) as usize);
            // Flush first: then `unsent() > 0` after a cancellation says this frame began.
            bounded("flush", w.flush()).await.unwrap();
            let nap = Duration::from_micros(pace.range(0, 2_000));
            tokio::select! {
                biased;
                done = w.write_frame(&f) => { done.unwrap(); index += 1; }
                _ = tokio::time::sleep(nap) => {
                    if w.unsent() > 0 {
                        begun_and_dropped += 1; // it will arrive whole: next frame
                        index += 1;
                    } else {
                        dropped_unbegun += 1; // nothing of it went: send it again
                    }
                }
            }
        }
        bounded("flush", w.flush()).await.unwrap();
        let blocking = bounded("into_blocking", w.into_blocking()).await.unwrap();
        drop(blocking);
        assert_eq!(step.expect("frames"), format!("frames {index}"));
        eprintln!("{begun_and_dropped} frames dropped mid-way, {dropped_unbegun} before starting");
    });
    p.expect_success(CHILD_LIMIT);
}

#[test]
fn a_dropped_record_write_sent_nothing_and_try_forms_never_wait() {
    let _wd = Watchdog::new("dropped_record", Duration::from_secs(60));
    let dir = place();
    let fifo = Fifo::create(dir.join("rec").unwrap()).unwrap();
    runtime().block_on(async {
        let mut records = AsyncRecordReader::new(AsyncFifoReader::try_open(fifo.path()).unwrap());
        let mut w = AsyncFifoWriter::try_open(fifo.path()).unwrap();
        assert!(matches!(records.try_recv(), Err(Error::WouldBlock)));
        // Fill the FIFO with records, then its last page with empty ones.
        let mut n = 0u32;
        while w.try_write_record(&n.to_le_bytes().repeat(250)).is_ok() {
            n += 1;
        }
        let mut empty = 0;
        while w.try_write_record(b"").is_ok() {
            empty += 1;
        }
        assert!(matches!(w.try_write_record(b"x"), Err(Error::WouldBlock)));
        // A record write that cannot go through, dropped: nothing of it was written.
        {
            let mut write = pin!(w.write_record(b"dropped"));
            assert!(poll_once(write.as_mut()).await.is_pending());
        }
        assert!(matches!(
            w.write_record(&[0u8; ipc_fifo::RECORD_MAX + 1]).await,
            Err(Error::MessageTooLarge { .. })
        ));
        for i in 0..n {
            let got = bounded("recv", records.recv()).await.unwrap().unwrap();
            assert_eq!(got, &i.to_le_bytes().repeat(250)[..]);
        }
        for _ in 0..empty {
            assert_eq!(
                bounded("recv", records.recv()).await.unwrap(),
                Some(&b""[..])
            );
        }
        assert!(matches!(records.try_recv(), Err(Error::WouldBlock)));
        bounded("record", w.write_record(b"last")).await.unwrap();
        assert_eq!(records.try_recv().unwrap(), Some(&b"last"[..]));
        drop(w);
        assert_eq!(bounded("end", records.recv()).await.unwrap(), None);
        // Back to blocking: the modes are what they should be.
        let r = records.into_inner().into_blocking().unwrap();
        assert!(
            !rustix::fs::fcntl_getfl(&r)
                .unwrap()
                .contains(rustix::fs::OFlags::NONBLOCK)
        );
    });
}

/// Child role: a test process whose parent is busy (threads, a runtime): it forks, and the
/// forked child drops its inherited async reader and writer; the parent's registrations of
/// the same descriptors must still work: both then wait for readiness that only the reactor
/// can report.
#[allow(unsafe_code)]
fn forker_role() {
    let dir = place();
    let (a, b) = (dir.join("a").unwrap(), dir.join("b").unwrap());
    let (fa, fb) = (Fifo::create(&a).unwrap(), Fifo::create(&b).unwrap());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            // An async reader with nothing to read (its readiness cleared by a read that had
            // to wait), and an async writer to a full FIFO (the same).
            let mut r = AsyncFifoReader::try_open(&a).unwrap();
            let wa = FifoWriter::try_open(&a).unwrap();
            let mut buf = [0u8; 8];
            let t = tokio::time::timeout(Duration::from_millis(50), r.read(&mut buf)).await;
            assert!(t.is_err());
            let mut rb = FifoReader::try_open(&b).unwrap();
            let mut w = AsyncFifoWriter::try_open(&b).unwrap();
            let mut filled = 0;
            loop {
                let write = w.write(&[1u8; 4096]);
                match tokio::time::timeout(Duration::from_millis(50), write).await {
                    Ok(n) => filled += n.unwrap(),
                    Err(_) => break,
                }
            }
            // SAFETY: the child only drops the two handles (a `getpid` and a `close` each:
            // async-signal-safe) and `_exit`s.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                drop(r);
                drop(w);
                // SAFETY: ends the child at once, running nothing of the parent's.
                unsafe { libc::_exit(0) };
            }
            assert!(pid > 0);
            let mut status = 0;
            // SAFETY: `pid` is our child; `status` is valid for writes.
            let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
            assert_eq!(waited, pid);
            assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
            // Readiness still arrives: data for the reader, room for the writer.
            let read = tokio::spawn(async move {
                let mut buf = [0u8; 6];
                r.read_exact(&mut buf).await.unwrap();
                buf
            });
            let write = tokio::spawn(async move {
                w.write_all(b"second").await.unwrap();
            });
            (&wa).write_all(b"second").unwrap();
            assert_eq!(&bounded("reader", read).await.unwrap(), b"second");
            let mut got = vec![0u8; filled + 6];
            rb.read_exact(&mut got).unwrap();
            assert_eq!(&got[filled..], b"second");
            bounded("writer", write).await.unwrap();
            drop((fa, fb));
        });
}

#[test]
fn a_forked_child_dropping_inherited_async_handles_leaves_the_parent_s_registrations() {
    if role().as_deref() == Some("forker") {
        return forker_role();
    }
    let _wd = Watchdog::new("async_fork", Duration::from_secs(60));
    Proc::spawn(&mut child(
        &test_path!(
            a_forked_child_dropping_inherited_async_handles_leaves_the_parent_s_registrations
        ),
        "forker",
    ))
    .unwrap()
    .expect_success(CHILD_LIMIT);
}

#[test]
fn async_and_blocking_ends_convert_both_ways() {
    let _wd = Watchdog::new("async_convert", Duration::from_secs(30));
    let dir = place();
    let fifo = Fifo::create(dir.join("conv").unwrap()).unwrap();
    let path: &Path = fifo.path();
    runtime().block_on(async {
        let r = AsyncFifoReader::new(FifoReader::try_open(path).unwrap()).unwrap();
        let w = AsyncFifoWriter::new(FifoWriter::try_open(path).unwrap()).unwrap();
        for fd in [r.as_fd(), w.as_fd()] {
            let fl = rustix::fs::fcntl_getfl(fd).unwrap();
            assert!(fl.contains(rustix::fs::OFlags::NONBLOCK));
        }
        let w = bounded("into_blocking", w.into_blocking()).await.unwrap();
        let r = r.into_blocking().unwrap();
        w.write_record(b"blocking again").unwrap();
        let mut rec = RecordReader::new(r);
        assert_eq!(rec.recv().unwrap(), Some(&b"blocking again"[..]));
        let keep = FifoReader::options()
            .keep_alive(KeepAlive::On)
            .try_open_async(path)
            .unwrap();
        assert!(keep.is_keep_alive());
        assert!(format!("{keep:?}").contains("keep_alive: true"));
    });
}

#[test]
fn an_async_reader_refuses_a_hostile_length_before_allocating_and_reports_a_cut_frame() {
    let _wd = Watchdog::new("async_hostile", Duration::from_secs(60));
    let dir = place();
    let fifo = Fifo::create(dir.join("hostile").unwrap()).unwrap();
    let rt = runtime();
    let _in_rt = rt.enter();
    let reader = AsyncFifoReader::try_open(fifo.path()).unwrap();
    let mut frames = AsyncRecordReader::framed(reader, 1 << 30);
    let w = FifoWriter::try_open(fifo.path()).unwrap();
    // A header announcing 512 MiB, and 3 bytes: the reader's memory follows what arrives.
    (&w).write_all(&(512u32 << 20).to_le_bytes()).unwrap();
    (&w).write_all(b"abc").unwrap();
    let ((), peak) = crate::tracked(|| {
        rt.block_on(async {
            let r = tokio::time::timeout(Duration::from_millis(200), frames.recv()).await;
            assert!(r.is_err(), "no frame: the receive waits for the rest");
        })
    });
    assert!(
        peak <= 256 << 10,
        "{peak} bytes allocated for 7 bytes that arrived"
    );
    drop(w);
    let r = rt
        .block_on(bounded("cut", frames.recv()))
        .map(|f| f.map(<[u8]>::len));
    assert!(matches!(r, Err(Error::Truncated)), "{r:?}");
    // Beyond the maximum: refused at once.
    let reader = AsyncFifoReader::try_open(fifo.path()).unwrap();
    let mut frames = AsyncRecordReader::framed(reader, 1 << 20);
    let w = FifoWriter::try_open(fifo.path()).unwrap();
    (&w).write_all(&u32::MAX.to_le_bytes()).unwrap();
    let r = rt
        .block_on(bounded("hostile", frames.recv()))
        .map(|f| f.map(<[u8]>::len));
    assert!(
        matches!(r, Err(Error::MessageTooLarge { len, max }) if len == u32::MAX as usize && max == 1 << 20),
        "{r:?}"
    );
    drop(w);
}

#[test]
fn async_ends_and_their_futures_can_move_between_threads() {
    fn send_sync<T: Send + Sync + Unpin + std::fmt::Debug>() {}
    fn send<T: Send>(_: &T) {}
    send_sync::<AsyncFifoReader>();
    send_sync::<AsyncFifoWriter>();
    send_sync::<AsyncRecordReader>();
    let dir = place();
    let fifo = Fifo::create(dir.join("send").unwrap()).unwrap();
    let rt = runtime();
    let _in_rt = rt.enter();
    let mut records = AsyncRecordReader::new(AsyncFifoReader::try_open(fifo.path()).unwrap());
    let mut w = AsyncFifoWriter::try_open(fifo.path()).unwrap();
    // The futures a multi-thread runtime's `spawn` needs to move.
    send(&records.recv());
    send(&w.write_record(b"r"));
    send(&w.write_frame(b"f"));
    send(&w.flush());
    send(&AsyncFifoReader::open(fifo.path()));
    send(&AsyncFifoWriter::open_timeout(fifo.path(), LIMIT));
}
