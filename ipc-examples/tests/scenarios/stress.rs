//! Every mechanism under load at once: writer processes hammer a pipe, a FIFO, a POSIX queue, a
//! System V queue, a shared-memory ring and an eventfd semaphore for a bounded time with
//! checksummed, sequence-numbered records; one process reads them all. Nothing lost, nothing
//! torn, nothing duplicated. Every writer also checks that it inherited no descriptor it was
//! not given, although the parent holds one of every kind while it spawns them.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::process::Stdio;
use std::time::{Duration, Instant};

use ipc_fifo::{Fifo, FifoReader, FifoWriter, KeepAlive, PrivateDir, RecordReader};
use ipc_mq::{Access, MessageQueue, Select, SysvQueue};
use ipc_pipe::{ChildFds, PipeWriter};
use ipc_sem::EventSemaphore;
use ipc_shm::{Ring, Shm};
use ipc_testkit::objects::Snapshot;
use ipc_testkit::{Proc, SplitMix64, fnv1a64, test_path};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::serial;

/// How long the writers write.
const RUN: Duration = Duration::from_millis(1500);
/// How long the whole scenario may take.
const LIMIT: Duration = Duration::from_secs(60);
/// The pipe's write end in a pipe writer.
const PIPE_FD: i32 = 3;
/// Largest record payload: fits a POSIX queue message of MSG bytes and one atomic pipe write.
const MAX_PAYLOAD: usize = 900;
const MSG: usize = 1024;
const RING_BYTES: u64 = 1 << 20;
/// Posts per eventfd writer at most (they would otherwise take all the CPU from the others).
const MAX_POSTS: u64 = 50_000;

const KIND_ENV: &str = "IPC_STRESS_KIND";
const ID_ENV: &str = "IPC_STRESS_ID";
const PATH_ENV: &str = "IPC_STRESS_PATH";
const HELD_ENV: &str = "IPC_STRESS_HELD";

/// The writers: (kind, how many processes).
const WRITERS: [(&str, u32); 6] = [
    ("pipe", 3),
    ("fifo", 3),
    ("mq", 2),
    ("sysv", 2),
    ("ring", 1),
    ("eventfd", 2),
];

/// A record: writer id u32, seq u64 (u64::MAX: the end, payload = count), len u16, payload,
/// FNV-1a of everything before it.
fn encode(id: u32, seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut r = Vec::with_capacity(22 + payload.len());
    r.extend_from_slice(&id.to_le_bytes());
    r.extend_from_slice(&seq.to_le_bytes());
    r.extend_from_slice(&(payload.len() as u16).to_le_bytes());
    r.extend_from_slice(payload);
    let sum = fnv1a64(&r);
    r.extend_from_slice(&sum.to_le_bytes());
    r
}

/// Checks a record and returns (writer id, seq, payload).
fn decode(r: &[u8]) -> Result<(u32, u64, Vec<u8>), String> {
    if r.len() < 22 {
        return Err(format!("torn record of {} bytes", r.len()));
    }
    let len = u16::from_le_bytes([r[12], r[13]]) as usize;
    if r.len() != 22 + len {
        return Err(format!("record length {} for payload {len}", r.len()));
    }
    let (body, sum) = r.split_at(14 + len);
    if fnv1a64(body) != u64::from_le_bytes(sum.try_into().expect("8 bytes")) {
        return Err("checksum mismatch".into());
    }
    let id = u32::from_le_bytes(r[0..4].try_into().expect("4"));
    let seq = u64::from_le_bytes(r[4..12].try_into().expect("8"));
    Ok((id, seq, body[14..].to_vec()))
}

/// What a descriptor refers to (`pipe:[123]`, `/dev/mqueue/..`, `anon_inode:[eventfd]`, a path).
fn fd_target(fd: i32) -> String {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .map_or_else(|_| "?".into(), |p| p.display().to_string())
}

/// A writer holds none of the parent's IPC descriptors except the one it was given (the pipe
/// at PIPE_FD, the eventfd as stdin). Descriptors the test process itself inherited from its
/// environment (a jobserver pipe, say) are not the crates' business and are not counted.
fn check_inherited(kind: &str) {
    let held = std::env::var(HELD_ENV).expect("held descriptors");
    let held: Vec<&str> = held.lines().collect();
    let mut stray = Vec::new();
    for e in std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .flatten()
    {
        let fd: i32 = e.file_name().to_string_lossy().parse().expect("fd number");
        let target = fd_target(fd);
        let given = (kind == "pipe" && fd == PIPE_FD) || (kind == "eventfd" && fd == 0);
        if !given && held.contains(&target.as_str()) {
            stray.push(format!("{fd} -> {target}"));
        }
    }
    assert!(
        stray.is_empty(),
        "{kind} writer inherited descriptors it was not given: {stray:?}"
    );
}

fn writer(kind: &str) {
    check_inherited(kind);
    let id: u32 = ipc_testkit::env_parse(ID_ENV).expect("writer id");
    let path = std::env::var(PATH_ENV).unwrap_or_default();
    let mut rng = SplitMix64::new(u64::from(id) * 7919);
    let until = Instant::now() + RUN;
    let mut seq = 0u64;
    let mut payload = vec![0u8; MAX_PAYLOAD];
    let mut next = |rng: &mut SplitMix64, seq: u64| {
        if Instant::now() >= until {
            return encode(id, u64::MAX, &seq.to_le_bytes());
        }
        let len = rng.range(0, MAX_PAYLOAD as u64) as usize;
        rng.fill(&mut payload[..len]);
        encode(id, seq, &payload[..len])
    };
    match kind {
        "pipe" => {
            #[allow(unsafe_code)]
            // SAFETY: the parent placed a pipe end at PIPE_FD (`ChildFds`), and nothing else in
            // this re-run test process owns that number: it is claimed once, here.
            let w = unsafe { PipeWriter::from_inherited(PIPE_FD) }.expect("inherited pipe");
            loop {
                let rec = next(&mut rng, seq);
                w.write_atomic(&rec).expect("pipe write");
                if decode(&rec).expect("own").1 == u64::MAX {
                    break;
                }
                seq += 1;
            }
        }
        "fifo" => {
            let w = FifoWriter::open_timeout(&path, LIMIT).expect("fifo open");
            loop {
                let rec = next(&mut rng, seq);
                w.write_record(&rec).expect("fifo write");
                if decode(&rec).expect("own").1 == u64::MAX {
                    break;
                }
                seq += 1;
            }
        }
        "mq" => {
            let q = MessageQueue::open(&path, Access::Send).expect("mq open");
            loop {
                let rec = next(&mut rng, seq);
                let end = decode(&rec).expect("own").1 == u64::MAX;
                // The end goes last at the lowest priority: everything before it is out first.
                let prio = if end { 0 } else { rng.range(1, 31) as u32 };
                q.send_timeout(&rec, prio, LIMIT).expect("mq send");
                if end {
                    break;
                }
                seq += 1;
            }
        }
        "sysv" => {
            let q = SysvQueue::from_id(path.parse().expect("queue id")).expect("sysv open");
            loop {
                let rec = next(&mut rng, seq);
                q.send(i64::from(id), &rec).expect("sysv send");
                if decode(&rec).expect("own").1 == u64::MAX {
                    break;
                }
                seq += 1;
            }
        }
        "ring" => {
            let shm = Shm::open(&path, RING_BYTES).expect("shm open");
            let mut w = Ring::open(shm)
                .expect("ring")
                .into_writer()
                .expect("writer");
            loop {
                let rec = next(&mut rng, seq);
                w.send_timeout(&rec, LIMIT).expect("ring send");
                if decode(&rec).expect("own").1 == u64::MAX {
                    break;
                }
                seq += 1;
            }
        }
        "eventfd" => {
            // The eventfd is standard input; the count goes out on standard output.
            let ev = EventSemaphore::from(
                std::io::stdin()
                    .as_fd()
                    .try_clone_to_owned()
                    .expect("stdin"),
            );
            while Instant::now() < until && seq < MAX_POSTS {
                ev.post().expect("post");
                seq += 1;
            }
            println!("posted {seq}");
        }
        other => panic!("unknown writer kind {other}"),
    }
}

/// What arrived from one writer.
#[derive(Default)]
struct Seen {
    seqs: Vec<u64>,
    end: Option<u64>,
}

impl Seen {
    fn take(&mut self, rec: &[u8], kind: &str, expect_order: bool) -> Result<u32, String> {
        let (id, seq, payload) = decode(rec).map_err(|e| format!("{kind}: {e}"))?;
        if seq == u64::MAX {
            let n = u64::from_le_bytes(payload.try_into().map_err(|_| format!("{kind}: bad end"))?);
            self.end = Some(n);
        } else {
            if expect_order && self.seqs.last().is_some_and(|&l| l + 1 != seq) {
                return Err(format!(
                    "{kind} writer {id}: seq {seq} after {:?}",
                    self.seqs.last()
                ));
            }
            self.seqs.push(seq);
        }
        Ok(id)
    }
}

#[test]
fn every_mechanism_at_once_loses_and_tears_nothing() {
    if let Some(kind) = ipc_testkit::role() {
        writer(&kind);
        return;
    }
    let _one = serial();
    let _wd = ipc_testkit::Watchdog::new("stress scenario", LIMIT + Duration::from_secs(30));
    let before = Snapshot::take();
    {
        run_stress();
    }
    let leaks = Snapshot::take().leaks_since(&before);
    assert!(leaks.is_empty(), "stress left behind: {leaks:?}");
}

fn run_stress() {
    let test = test_path!(every_mechanism_at_once_loses_and_tears_nothing);
    let (pipe_r, pipe_w) = ipc_pipe::pipe().expect("pipe");
    let dir = PrivateDir::new("ipcrs-stress").expect("private dir");
    let fifo = Fifo::create(dir.join("records").expect("join")).expect("fifo");
    let mut fifo_r = RecordReader::new(
        FifoReader::options()
            .keep_alive(KeepAlive::On)
            .try_open(fifo.path())
            .expect("fifo reader"),
    );
    let mq_name = ipc_testkit::posix_name("stress");
    let mq = MessageQueue::options()
        .max_messages(10)
        .message_size(MSG as u64)
        .create(&mq_name)
        .expect("mq");
    let sysv = SysvQueue::create(ipc_mq::Key::new(ipc_testkit::sysv_key())).expect("sysv queue");
    let shm_name = ipc_testkit::posix_name("stress");
    let shm = Shm::create(&shm_name, RING_BYTES).expect("shm");
    let ev = EventSemaphore::new(0).expect("eventfd");
    // Every IPC descriptor this process holds while it spawns the writers.
    let held: Vec<String> = [
        pipe_r.as_fd(),
        pipe_w.as_fd(),
        fifo_r.get_ref().as_fd(),
        mq.as_fd(),
        ev.as_fd(),
        shm.as_fd(),
    ]
    .iter()
    .map(|fd| fd_target(std::os::fd::AsRawFd::as_raw_fd(fd)))
    .collect();
    let held = held.join("\n");
    let mut ring = Ring::create(shm)
        .expect("ring")
        .into_reader()
        .expect("reader");

    let mut procs = Vec::new();
    let mut id = 0u32;
    for (kind, n) in WRITERS {
        for _ in 0..n {
            id += 1;
            let mut cmd = ipc_testkit::child(&test, kind);
            cmd.env(KIND_ENV, kind)
                .env(ID_ENV, id.to_string())
                .env(HELD_ENV, &held);
            match kind {
                "pipe" => {
                    ChildFds::new()
                        .fd_at(PIPE_FD, pipe_w.try_clone().expect("clone"))
                        .apply(&mut cmd)
                        .expect("place the pipe end at PIPE_FD");
                }
                "fifo" => {
                    cmd.env(PATH_ENV, fifo.path());
                }
                "mq" => {
                    cmd.env(PATH_ENV, &mq_name);
                }
                "sysv" => {
                    cmd.env(PATH_ENV, sysv.id().to_string());
                }
                "ring" => {
                    cmd.env(PATH_ENV, &shm_name);
                }
                _ => {
                    cmd.stdin(Stdio::from(OwnedFd::from(ev.try_clone().expect("clone"))))
                        .stdout(Stdio::piped());
                }
            }
            procs.push((kind, id, Proc::spawn(&mut cmd).expect("spawn writer")));
        }
    }
    drop(pipe_w);
    let mut pipe_r = Some(pipe_r);
    let mut ring_gone = false;
    let mut seen: BTreeMap<(&str, u32), Seen> = BTreeMap::new();
    let mut posts = 0u64;
    let mut pipe_buf = Vec::new();
    let mut msg = vec![0u8; MSG];
    let deadline = Instant::now() + LIMIT;
    let ends_expected: usize = WRITERS
        .iter()
        .filter(|(k, _)| *k != "eventfd")
        .map(|(_, n)| *n as usize)
        .sum();
    let ends =
        |seen: &BTreeMap<(&str, u32), Seen>| seen.values().filter(|s| s.end.is_some()).count();
    let record = |seen: &mut BTreeMap<(&'static str, u32), Seen>,
                  kind: &'static str,
                  rec: &[u8],
                  ordered: bool| {
        let (id, ..) = decode(rec).unwrap_or_else(|e| panic!("{kind}: {e}"));
        seen.entry((kind, id))
            .or_default()
            .take(rec, kind, ordered)
            .unwrap_or_else(|e| panic!("{e}"));
    };
    while ends(&seen) < ends_expected || pipe_r.is_some() {
        assert!(
            Instant::now() < deadline,
            "stress did not finish in {LIMIT:?}"
        );
        // System V queues are not descriptors: poll the rest with a short timeout and drain
        // the System V queue between polls.
        let mut fds = vec![
            PollFd::new(fifo_r.get_ref().as_fd(), PollFlags::POLLIN),
            PollFd::new(mq.as_fd(), PollFlags::POLLIN),
            PollFd::new(ev.as_fd(), PollFlags::POLLIN),
        ];
        if let Some(p) = &pipe_r {
            fds.push(PollFd::new(p.as_fd(), PollFlags::POLLIN));
        }
        poll(&mut fds, PollTimeout::from(1u8)).expect("poll");
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        if ready[0] {
            loop {
                match fifo_r.try_recv() {
                    Ok(Some(rec)) => {
                        let rec = rec.to_vec();
                        record(&mut seen, "fifo", &rec, true);
                    }
                    Ok(None) | Err(ipc_fifo::Error::WouldBlock) => break,
                    Err(e) => panic!("fifo: {e}"),
                }
            }
        }
        if ready[1] {
            while let Ok((n, _)) = mq.try_receive(&mut msg) {
                let rec = msg[..n].to_vec();
                record(&mut seen, "mq", &rec, false);
            }
        }
        if ready[2] {
            while ev.try_wait().is_ok() {
                posts += 1;
            }
        }
        if ready.get(3) == Some(&true) {
            let mut chunk = vec![0u8; 65536];
            let n = pipe_r
                .as_ref()
                .expect("open")
                .read(&mut chunk)
                .expect("pipe read");
            if n == 0 {
                pipe_r = None;
            }
            pipe_buf.extend_from_slice(&chunk[..n]);
            // Records are whole (atomic writes): split by their own length fields.
            while pipe_buf.len() >= 14 {
                let len = 22 + u16::from_le_bytes([pipe_buf[12], pipe_buf[13]]) as usize;
                if pipe_buf.len() < len {
                    break;
                }
                let rec: Vec<u8> = pipe_buf.drain(..len).collect();
                record(&mut seen, "pipe", &rec, true);
            }
        }
        while let Ok((n, _)) = sysv.try_receive(&mut msg, Select::Any) {
            let rec = msg[..n].to_vec();
            record(&mut seen, "sysv", &rec, true);
        }
        while !ring_gone {
            match ring.try_recv(&mut msg) {
                Ok(n) => {
                    let rec = msg[..n].to_vec();
                    record(&mut seen, "ring", &rec, true);
                }
                Err(ipc_shm::Error::WouldBlock) => break,
                // The writer exited after its end record, and everything it sent was read.
                Err(ipc_shm::Error::PeerGone) => ring_gone = true,
                Err(e) => panic!("ring: {e}"),
            }
        }
    }
    assert!(
        pipe_buf.is_empty(),
        "{} torn bytes left in the pipe",
        pipe_buf.len()
    );
    let mut total_posted = 0;
    let mut summary = Vec::new();
    for (kind, id, mut p) in procs {
        if kind == "eventfd" {
            let mut out = String::new();
            p.inner()
                .stdout
                .take()
                .expect("piped")
                .read_to_string(&mut out)
                .expect("stdout");
            let n: u64 = out
                .lines()
                .find_map(|l| l.strip_prefix("posted "))
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("eventfd writer {id} said {out:?}"));
            total_posted += n;
        }
        p.expect_success(LIMIT);
    }
    while ev.try_wait().is_ok() {
        posts += 1;
    }
    assert_eq!(posts, total_posted, "eventfd: posts counted vs posts made");
    for ((kind, id), s) in &seen {
        let n = s
            .end
            .unwrap_or_else(|| panic!("{kind} writer {id}: no end record"));
        let mut seqs = s.seqs.clone();
        seqs.sort_unstable();
        seqs.dedup();
        assert_eq!(seqs.len(), s.seqs.len(), "{kind} writer {id}: duplicates");
        assert_eq!(
            seqs.len() as u64,
            n,
            "{kind} writer {id}: {} of {n} records",
            seqs.len()
        );
        assert!(
            seqs.iter().enumerate().all(|(i, &q)| i as u64 == q),
            "{kind} writer {id}: gaps"
        );
        summary.push(format!("{kind}#{id}: {n}"));
    }
    assert_eq!(
        seen.len(),
        ends_expected,
        "writers heard from: {:?}",
        seen.keys()
    );
    eprintln!(
        "stress: {} records + {posts} eventfd posts, all whole: {}",
        seen.values().map(|s| s.seqs.len()).sum::<usize>(),
        summary.join(", ")
    );
}
