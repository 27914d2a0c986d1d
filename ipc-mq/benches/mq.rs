//! ipc-mq against raw libc, same protocol, same run, two processes.
//!
//! - 64 B round trip: the parent sends 64 bytes, the forked child receives and echoes them,
//!   the parent times each round trip. POSIX: one queue each way (10 × 8192, the system
//!   default, as `../shared/baseline` `lat mq` uses); System V: one queue, type 1 there and
//!   type 2 back.
//! - 8 KiB throughput: the parent sends 8192-byte messages, the child receives them, checks
//!   each one's sequence number and checksum, and reports failure through its exit status.
//!
//! - With `--features tokio`, the same round trips with the measuring side awaiting
//!   (`AsyncMessageQueue` on a current-thread runtime; `AsyncSysvQueue` and its helper thread),
//!   each round in a child process of its own; reported next to raw libc without a target.
//!
//! Both processes run on CPU 0 (`PIN=split`: parent on 0, child on 1; `PIN=none`: unpinned).
//! Ours and raw libc alternate in rounds so that both see the same machine; each figure is
//! the median (latency: of all samples; throughput: of the rounds).
#![allow(unsafe_code)] // the raw-libc baseline
#![allow(missing_docs)]

use std::ffi::CString;
use std::time::Instant;

use ipc_mq::{Key, MessageQueue, Select, SysvMessage, SysvQueue};
use ipc_testkit::bench::{Latency, Mode, emit_latency, emit_throughput, now_ns, wait_ok};
use ipc_testkit::fnv1a64;

const SMALL: usize = 64;
const BIG: usize = 8192;
const BASE: &str = "raw libc";

fn posix_name(tag: &str) -> String {
    format!("/ipcrs-bench-{tag}-{}", std::process::id())
}

/// Fills `buf` with a message: sequence number, pattern, checksum of the rest in the tail.
fn fill(buf: &mut [u8], seq: u64) {
    buf[..8].copy_from_slice(&seq.to_le_bytes());
    let n = buf.len();
    buf[8] = seq as u8;
    let sum = fnv1a64(&buf[..16]);
    buf[n - 8..].copy_from_slice(&sum.to_le_bytes());
}

fn check(buf: &[u8], seq: u64) -> bool {
    let n = buf.len();
    n == BIG
        && buf[..8] == seq.to_le_bytes()
        && buf[8] == seq as u8
        && buf[n - 8..] == fnv1a64(&buf[..16]).to_le_bytes()
}

/// Pins the calling process (`cpu`: 0 for the parent, 1 for the child) as `PIN` says, the
/// C baseline's variable: `same` (the default) puts both processes on CPU 0, `split` the parent
/// on CPU 0 and the child on CPU 1, `none` leaves placement to the scheduler.
///
/// `same` is the default because on a small shared machine it gives the steadiest ratios: a
/// round trip is then two context switches and the calls themselves, so any cost the crate adds
/// shows in full, while cross-core wake-ups (`split`, `none`) vary by ±15 % between runs.
fn pin(cpu: usize) {
    // Counted once, before the first pin narrows this process's affinity to one CPU.
    static CPUS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let n = *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let target = match std::env::var("PIN").as_deref() {
        Ok("none") => return,
        Ok("split") if n > 1 => cpu % n,
        _ => 0,
    };
    let mut set = rustix::thread::CpuSet::new();
    set.set(target);
    let _ = rustix::thread::sched_setaffinity(None, &set);
}

/// `bench::fork`, with the child pinned as [`pin`] says.
fn fork(f: impl FnOnce() -> i32) -> i32 {
    ipc_testkit::bench::fork(|| {
        pin(1);
        f()
    })
}

// ---------------------------------------------------------------- POSIX, the crate

fn ours_posix_latency(iters: usize) -> Vec<u64> {
    let (na, nb) = (posix_name("a2b"), posix_name("b2a"));
    let a2b = MessageQueue::create(&na, 10, BIG as u64).unwrap();
    let b2a = MessageQueue::create(&nb, 10, BIG as u64).unwrap();
    let pid = fork(|| {
        let mut big = vec![0u8; BIG];
        for _ in 0..iters {
            let (n, _) = a2b.receive(&mut big).unwrap();
            b2a.send(&big[..n], 0).unwrap();
        }
        0
    });
    let msg = [7u8; SMALL];
    let mut big = vec![0u8; BIG];
    let mut samples = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = now_ns();
        a2b.send(&msg, 0).unwrap();
        let (n, _) = b2a.receive(&mut big).unwrap();
        samples.push(now_ns() - t);
        assert_eq!(&big[..n], &msg[..]);
    }
    wait_ok(pid);
    samples
}

fn ours_posix_throughput(msgs: u64) -> f64 {
    let name = posix_name("thr");
    let q = MessageQueue::create(&name, 10, BIG as u64).unwrap();
    let start = Instant::now();
    let pid = fork(|| {
        let mut buf = vec![0u8; BIG];
        for seq in 0..msgs {
            let (n, _) = q.receive(&mut buf).unwrap();
            if !check(&buf[..n], seq) {
                return 1;
            }
        }
        0
    });
    let mut buf = vec![0u8; BIG];
    for seq in 0..msgs {
        fill(&mut buf, seq);
        q.send(&buf, 0).unwrap();
    }
    wait_ok(pid);
    ipc_testkit::bench::gbps(msgs * BIG as u64, start)
}

// ---------------------------------------------------------------- POSIX, raw libc

fn raw_mq_open(name: &str) -> libc::mqd_t {
    let c = CString::new(name).unwrap();
    // SAFETY: all-zero is a valid mq_attr.
    let mut attr: libc::mq_attr = unsafe { std::mem::zeroed() };
    attr.mq_maxmsg = 10;
    attr.mq_msgsize = BIG as libc::c_long;
    let flags = libc::O_CREAT | libc::O_EXCL | libc::O_RDWR | libc::O_CLOEXEC;
    // SAFETY: `c` is NUL-terminated; `attr` is valid for the call.
    let q = unsafe { libc::mq_open(c.as_ptr(), flags, 0o600, &attr) };
    assert!(q >= 0, "mq_open: {}", std::io::Error::last_os_error());
    // SAFETY: `c` is NUL-terminated; the descriptor keeps the queue alive.
    unsafe { libc::mq_unlink(c.as_ptr()) };
    q
}

fn raw_send(q: libc::mqd_t, msg: &[u8]) {
    // SAFETY: `msg` is valid for reads of its length.
    let r = unsafe { libc::mq_send(q, msg.as_ptr().cast(), msg.len(), 0) };
    assert_eq!(r, 0, "mq_send");
}

fn raw_receive(q: libc::mqd_t, buf: &mut [u8]) -> usize {
    // SAFETY: `buf` is valid for writes of its length.
    let n =
        unsafe { libc::mq_receive(q, buf.as_mut_ptr().cast(), buf.len(), std::ptr::null_mut()) };
    assert!(n >= 0, "mq_receive");
    n as usize
}

fn raw_close(q: libc::mqd_t) {
    // SAFETY: `q` is an open queue descriptor, closed once.
    unsafe { libc::mq_close(q) };
}

fn raw_posix_latency(iters: usize) -> Vec<u64> {
    let a2b = raw_mq_open(&posix_name("ra2b"));
    let b2a = raw_mq_open(&posix_name("rb2a"));
    let pid = fork(|| {
        let mut big = vec![0u8; BIG];
        for _ in 0..iters {
            let n = raw_receive(a2b, &mut big);
            raw_send(b2a, &big[..n]);
        }
        0
    });
    let msg = [7u8; SMALL];
    let mut big = vec![0u8; BIG];
    let mut samples = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = now_ns();
        raw_send(a2b, &msg);
        let n = raw_receive(b2a, &mut big);
        samples.push(now_ns() - t);
        assert_eq!(&big[..n], &msg[..]);
    }
    wait_ok(pid);
    raw_close(a2b);
    raw_close(b2a);
    samples
}

fn raw_posix_throughput(msgs: u64) -> f64 {
    let q = raw_mq_open(&posix_name("rthr"));
    let start = Instant::now();
    let pid = fork(|| {
        let mut buf = vec![0u8; BIG];
        for seq in 0..msgs {
            let n = raw_receive(q, &mut buf);
            if !check(&buf[..n], seq) {
                return 1;
            }
        }
        0
    });
    let mut buf = vec![0u8; BIG];
    for seq in 0..msgs {
        fill(&mut buf, seq);
        raw_send(q, &buf);
    }
    wait_ok(pid);
    raw_close(q);
    ipc_testkit::bench::gbps(msgs * BIG as u64, start)
}

// ---------------------------------------------------------------- System V, the crate

fn ours_sysv_latency(iters: usize) -> Vec<u64> {
    let q = SysvQueue::create(Key::PRIVATE).unwrap();
    let pid = fork(|| {
        let mut buf = [0u8; SMALL];
        for _ in 0..iters {
            let (n, _) = q.receive(&mut buf, Select::Type(1)).unwrap();
            q.send(2, &buf[..n]).unwrap();
        }
        0
    });
    let msg = [7u8; SMALL];
    let mut buf = [0u8; SMALL];
    let mut samples = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = now_ns();
        q.send(1, &msg).unwrap();
        let (n, _) = q.receive(&mut buf, Select::Type(2)).unwrap();
        samples.push(now_ns() - t);
        assert_eq!(&buf[..n], &msg[..]);
    }
    wait_ok(pid);
    samples
}

/// The crate's copy-free path: `SysvMessage` holds the type header next to the text, as the
/// raw `struct msgbuf` does (plain `send`/`receive` stage the text through a scratch buffer).
fn ours_sysv_throughput(msgs: u64) -> f64 {
    let q = SysvQueue::create(Key::PRIVATE).unwrap();
    let start = Instant::now();
    let pid = fork(|| {
        let mut m = SysvMessage::with_capacity(BIG);
        for seq in 0..msgs {
            q.receive_message(&mut m, Select::Any).unwrap();
            if !check(m.text(), seq) {
                return 1;
            }
        }
        0
    });
    let mut m = SysvMessage::with_capacity(BIG);
    m.set_mtype(1);
    m.set_len(BIG);
    for seq in 0..msgs {
        fill(m.text_mut(), seq);
        q.send_message(&m).unwrap();
    }
    wait_ok(pid);
    ipc_testkit::bench::gbps(msgs * BIG as u64, start)
}

// ---------------------------------------------------------------- System V, raw libc

/// `struct msgbuf { long mtype; char mtext[BIG]; }`
#[repr(C)]
struct MsgBuf {
    mtype: libc::c_long,
    mtext: [u8; BIG],
}

fn raw_msgget() -> i32 {
    // SAFETY: plain integers.
    let id = unsafe { libc::msgget(libc::IPC_PRIVATE, libc::IPC_CREAT | 0o600) };
    assert!(id >= 0, "msgget");
    id
}

fn raw_msgsnd(id: i32, m: &MsgBuf, len: usize) {
    // SAFETY: `m` is a valid msgbuf whose text holds at least `len` bytes.
    let r = unsafe { libc::msgsnd(id, (m as *const MsgBuf).cast(), len, 0) };
    assert_eq!(r, 0, "msgsnd");
}

fn raw_msgrcv(id: i32, m: &mut MsgBuf, typ: libc::c_long) -> usize {
    // SAFETY: `m` is a valid, writable msgbuf with BIG bytes of text.
    let n = unsafe { libc::msgrcv(id, (m as *mut MsgBuf).cast(), BIG, typ, 0) };
    assert!(n >= 0, "msgrcv");
    n as usize
}

fn raw_rmid(id: i32) {
    // SAFETY: IPC_RMID reads no buffer.
    unsafe { libc::msgctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
}

fn raw_sysv_latency(iters: usize) -> Vec<u64> {
    let id = raw_msgget();
    let pid = fork(|| {
        let mut m = Box::new(MsgBuf {
            mtype: 0,
            mtext: [0; BIG],
        });
        for _ in 0..iters {
            let n = raw_msgrcv(id, &mut m, 1);
            m.mtype = 2;
            raw_msgsnd(id, &m, n);
        }
        0
    });
    let mut out = Box::new(MsgBuf {
        mtype: 1,
        mtext: [7; BIG],
    });
    out.mtype = 1;
    let mut back = Box::new(MsgBuf {
        mtype: 0,
        mtext: [0; BIG],
    });
    let mut samples = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = now_ns();
        raw_msgsnd(id, &out, SMALL);
        let n = raw_msgrcv(id, &mut back, 2);
        samples.push(now_ns() - t);
        assert_eq!(&back.mtext[..n], &out.mtext[..SMALL]);
    }
    wait_ok(pid);
    raw_rmid(id);
    samples
}

fn raw_sysv_throughput(msgs: u64) -> f64 {
    let id = raw_msgget();
    let start = Instant::now();
    let pid = fork(|| {
        let mut m = Box::new(MsgBuf {
            mtype: 0,
            mtext: [0; BIG],
        });
        for seq in 0..msgs {
            let n = raw_msgrcv(id, &mut m, 0);
            if !check(&m.mtext[..n], seq) {
                return 1;
            }
        }
        0
    });
    let mut m = Box::new(MsgBuf {
        mtype: 1,
        mtext: [0; BIG],
    });
    for seq in 0..msgs {
        fill(&mut m.mtext, seq);
        raw_msgsnd(id, &m, BIG);
    }
    wait_ok(pid);
    raw_rmid(id);
    ipc_testkit::bench::gbps(msgs * BIG as u64, start)
}

// ---------------------------------------------------------------- async (the tokio feature)

/// The async forms, each round in a child of its own: a fresh process with its own runtime and
/// System V helper thread (so this process stays single-threaded for the next fork). The
/// measuring side awaits; its echo is the crate's blocking calls, as in `ours_*_latency`.
#[cfg(feature = "tokio")]
mod asynch {
    use std::io::Read;

    use ipc_mq::{AsyncMessageQueue, AsyncSysvQueue};

    use super::*;

    /// Runs `f` in a child and returns the samples it measured.
    fn in_child(f: impl FnOnce() -> Vec<u64>) -> Vec<u64> {
        let (r, w) = rustix::pipe::pipe().expect("pipe");
        let pid = fork(|| {
            pin(0); // the measuring side, placed as the parent is
            let bytes: Vec<u8> = f().iter().flat_map(|s| s.to_le_bytes()).collect();
            let mut left = &bytes[..];
            while !left.is_empty() {
                match rustix::io::write(&w, left) {
                    Ok(n) => left = &left[n..],
                    Err(rustix::io::Errno::INTR) => {}
                    Err(_) => return 1,
                }
            }
            0
        });
        drop(w);
        let mut bytes = Vec::new();
        std::fs::File::from(r)
            .read_to_end(&mut bytes)
            .expect("read samples");
        wait_ok(pid);
        bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .expect("runtime")
    }

    pub(super) fn posix_latency(iters: usize) -> Vec<u64> {
        in_child(|| {
            let (na, nb) = (posix_name("aa2b"), posix_name("ab2a"));
            let a2b = MessageQueue::create(&na, 10, BIG as u64).unwrap();
            let b2a = MessageQueue::create(&nb, 10, BIG as u64).unwrap();
            let pid = fork(|| {
                let mut big = vec![0u8; BIG];
                for _ in 0..iters {
                    let (n, _) = a2b.receive(&mut big).unwrap();
                    b2a.send(&big[..n], 0).unwrap();
                }
                0
            });
            let samples = runtime().block_on(async {
                let a2b = AsyncMessageQueue::new(a2b).unwrap();
                let b2a = AsyncMessageQueue::new(b2a).unwrap();
                let msg = [7u8; SMALL];
                let mut big = vec![0u8; BIG];
                let mut samples = Vec::with_capacity(iters);
                for _ in 0..iters {
                    let t = now_ns();
                    a2b.send(&msg, 0).await.unwrap();
                    let (n, _) = b2a.receive(&mut big).await.unwrap();
                    samples.push(now_ns() - t);
                    assert_eq!(&big[..n], &msg[..]);
                }
                samples
            });
            wait_ok(pid);
            samples
        })
    }

    pub(super) fn sysv_latency(iters: usize) -> Vec<u64> {
        in_child(|| {
            let q = SysvQueue::create(Key::PRIVATE).unwrap();
            let pid = fork(|| {
                let mut buf = [0u8; SMALL];
                for _ in 0..iters {
                    let (n, _) = q.receive(&mut buf, Select::Type(1)).unwrap();
                    q.send(2, &buf[..n]).unwrap();
                }
                0
            });
            let samples = runtime().block_on(async {
                let q = AsyncSysvQueue::new(q);
                let msg = [7u8; SMALL];
                let mut buf = [0u8; SMALL];
                let mut samples = Vec::with_capacity(iters);
                for _ in 0..iters {
                    let t = now_ns();
                    q.send(1, &msg).await.unwrap();
                    let (n, _) = q.receive(&mut buf, Select::Type(2)).await.unwrap();
                    samples.push(now_ns() - t);
                    assert_eq!(&buf[..n], &msg[..]);
                }
                samples
            });
            wait_ok(pid);
            samples
        })
    }
}

// ---------------------------------------------------------------- driver

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn latency(
    case: &str,
    rounds: usize,
    iters: usize,
    ours: fn(usize) -> Vec<u64>,
    raw: fn(usize) -> Vec<u64>,
    target: Option<f64>,
) {
    let (mut o, mut r) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        // Alternate who goes first, so neither always meets a warmer machine.
        if round % 2 == 0 {
            r.extend(raw(iters));
            o.extend(ours(iters));
        } else {
            o.extend(ours(iters));
            r.extend(raw(iters));
        }
    }
    emit_latency(
        "mq",
        case,
        Latency::of(&mut o),
        Latency::of(&mut r),
        BASE,
        target,
    );
}

fn throughput(case: &str, rounds: usize, msgs: u64, ours: fn(u64) -> f64, raw: fn(u64) -> f64) {
    let (mut o, mut r) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        if round % 2 == 0 {
            r.push(raw(msgs));
            o.push(ours(msgs));
        } else {
            o.push(ours(msgs));
            r.push(raw(msgs));
        }
    }
    emit_throughput("mq", case, median(o), median(r), BASE, Some(0.95));
}

fn main() {
    pin(0);
    let mode = Mode::from_env();
    let rounds = mode.pick(1, 5, 9);
    let iters = mode.pick(200, 2_000, 10_000);
    let msgs = mode.pick(500, 10_000, 50_000);
    latency(
        "POSIX 64 B round trip",
        rounds,
        iters,
        ours_posix_latency,
        raw_posix_latency,
        Some(1.05),
    );
    latency(
        "SysV 64 B round trip",
        rounds,
        iters,
        ours_sysv_latency,
        raw_sysv_latency,
        Some(1.05),
    );
    throughput(
        "POSIX 8 KiB messages",
        rounds,
        msgs,
        ours_posix_throughput,
        raw_posix_throughput,
    );
    throughput(
        "SysV 8 KiB messages",
        rounds,
        msgs,
        ours_sysv_throughput,
        raw_sysv_throughput,
    );
    // What awaiting costs, next to the blocking raw calls (no target: a different protocol).
    #[cfg(feature = "tokio")]
    {
        latency(
            "POSIX 64 B round trip, async (tokio)",
            rounds,
            iters,
            asynch::posix_latency,
            raw_posix_latency,
            None,
        );
        latency(
            "SysV 64 B round trip, async (helper)",
            rounds,
            iters.min(mode.pick(200, 1_000, 2_000)),
            asynch::sysv_latency,
            raw_sysv_latency,
            None,
        );
    }
}
