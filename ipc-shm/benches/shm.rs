//! ipc-shm bench: the ring against a raw ring written on libc/atomics and a plain pipe, in the
//! same run, between two processes (fork). Every receiver checks the data it got.
//!
//! Throughput: a stream of `TOTAL` bytes in 4 KiB, 64 KiB and 1 MiB messages through a 4 MiB
//! ring (ours: `ipc_shm::Ring` over an anonymous shared region; raw: the byte ring of
//! `../shared/baseline/thr.c`, spin 2000 pauses then futex; pipe: `write`/`read` on a pipe of
//! default capacity). Each chunk carries its sequence number in its first and last 8 bytes.
//! Each figure is the best of several runs (1 smoke, 3 quick, 5 full), the contenders of a case
//! alternating run by run: the machine is shared.
//!
//! 64-byte messages one way: `Ring` against the Rust port of `../shared/baseline/spsc64.c` (fixed
//! 64-byte slots, each side caching the other's index and publishing its own every 16
//! messages), both verifying every message as spsc64.c does (stamps in the first and last word,
//! a sum of the words between), both building each message word by word (the port in its slot,
//! ours in a buffer it sends); and against the C program itself (`benches/spsc64.c`, a copy,
//! built with `$CC`/`cc -O2` and run in the same run; skipped with a line when there is no C
//! compiler). Target: at least half the C program's rate.
//!
//! Latency: 64-byte round trips through two rings: ours spin-then-park against the busy-poll
//! floor (raw rings that only spin), ours park-only against raw futex-only rings, and, with both
//! processes pinned to one CPU, ours adaptive against raw futex-only rings.
//!
//! The two processes are pinned to two different CPUs (one CPU for the one-core case).
//!
//! The raw baseline needs raw pointers, so this file allows unsafe code in `mod raw` only.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Instant;

use ipc_shm::{Anon, Doorbell, Ring, Wait};
use ipc_testkit::bench::{self, Latency, Mode, emit_latency, emit_throughput, now_ns};
use rustix::thread::CpuSet;

const RING: usize = 4 << 20;

/// The CPU forked children pin themselves to (`usize::MAX`: no pinning).
static CHILD_CPU: AtomicUsize = AtomicUsize::new(usize::MAX);

fn pin(cpu: usize) {
    if cpu != usize::MAX {
        let mut set = CpuSet::new();
        set.set(cpu);
        rustix::thread::sched_setaffinity(None, &set).unwrap();
    }
}

/// `bench::fork`, the child pinned to `CHILD_CPU` first.
fn fork_pinned(f: impl FnOnce() -> i32) -> i32 {
    bench::fork(|| {
        pin(CHILD_CPU.load(Ordering::Relaxed));
        f()
    })
}

fn stamp(buf: &mut [u8], k: u64) {
    let n = buf.len();
    buf[..8].copy_from_slice(&k.to_le_bytes());
    buf[n - 8..].copy_from_slice(&k.to_le_bytes());
}

fn check(buf: &[u8], k: u64) {
    let n = buf.len();
    let head = u64::from_le_bytes(buf[..8].try_into().unwrap());
    let tail = u64::from_le_bytes(buf[n - 8..].try_into().unwrap());
    assert!(head == k && tail == k, "chunk {k}: stamps {head}/{tail}");
}

/// A go flag in shared memory, so the timer starts when both sides are ready.
struct Go(Anon);

impl Go {
    fn new() -> Go {
        Go(Anon::new(4096).unwrap())
    }
    fn flag(&self) -> &AtomicU32 {
        self.0.atomic::<AtomicU32>(0).unwrap()
    }
    fn wait(&self) {
        while self.flag().load(Ordering::Acquire) == 0 {
            std::hint::spin_loop();
        }
    }
    fn start(&self) {
        self.flag().store(1, Ordering::Release);
    }
}

fn thr_ours(chunk: usize, total: u64) -> f64 {
    let seg = Anon::new(Ring::segment_size(RING).unwrap()).unwrap();
    seg.fill(0, seg.len(), 0).unwrap(); // pre-fault, as the raw ring does
    let ring = Ring::create(&seg).unwrap();
    let go = Go::new();
    let n = total / chunk as u64;
    let pid = fork_pinned(|| {
        let mut w = Ring::open(&seg).unwrap().into_writer().unwrap();
        let mut buf = vec![0u8; chunk];
        go.wait();
        for k in 0..n {
            stamp(&mut buf, k);
            w.send(&buf).unwrap();
        }
        0
    });
    let mut r = ring.into_reader().unwrap();
    let mut buf = vec![0u8; chunk];
    let t0 = Instant::now();
    go.start();
    for k in 0..n {
        let got = r.recv(&mut buf).unwrap();
        assert_eq!(got, chunk);
        check(&buf, k);
    }
    let g = bench::gbps(n * chunk as u64, t0);
    bench::wait_ok(pid);
    g
}

fn thr_raw(chunk: usize, total: u64) -> f64 {
    let ring = raw::Ring::new(RING, raw::SPIN);
    let go = Go::new();
    let n = total / chunk as u64;
    let pid = fork_pinned(|| {
        let mut buf = vec![0u8; chunk];
        go.wait();
        for k in 0..n {
            stamp(&mut buf, k);
            ring.write(&buf);
        }
        0
    });
    let mut buf = vec![0u8; chunk];
    let t0 = Instant::now();
    go.start();
    for k in 0..n {
        ring.read_exact(&mut buf);
        check(&buf, k);
    }
    let g = bench::gbps(n * chunk as u64, t0);
    bench::wait_ok(pid);
    g
}

fn thr_pipe(chunk: usize, total: u64) -> f64 {
    let (rd, wr) = raw::pipe();
    let go = Go::new();
    let n = total / chunk as u64;
    let pid = fork_pinned(|| {
        raw::close(rd);
        let mut buf = vec![0u8; chunk];
        go.wait();
        for k in 0..n {
            stamp(&mut buf, k);
            raw::write_all(wr, &buf);
        }
        0
    });
    raw::close(wr);
    let mut buf = vec![0u8; chunk];
    let t0 = Instant::now();
    go.start();
    for k in 0..n {
        raw::read_exact(rd, &mut buf);
        check(&buf, k);
    }
    let g = bench::gbps(n * chunk as u64, t0);
    bench::wait_ok(pid);
    raw::close(rd);
    g
}

/// Gives `ring` a copy of `bell`, if there is one.
fn bell_on<S: ipc_shm::Segment>(ring: Ring<S>, bell: Option<&Doorbell>) -> Ring<S> {
    match bell {
        Some(b) => ring.with_doorbell(b.try_clone().unwrap()),
        None => ring,
    }
}

fn rtt_ours(wait: Wait, iters: usize) -> Latency {
    rtt_ours_bell(wait, iters, false)
}

/// 64-byte round trips through two rings of ours; with `bells`, every end has a doorbell (the
/// blocking calls spin then park on the futex as without: nothing rings while both spin).
fn rtt_ours_bell(wait: Wait, iters: usize, bells: bool) -> Latency {
    let size = Ring::segment_size(1 << 16).unwrap();
    let (a, b) = (Anon::new(size).unwrap(), Anon::new(size).unwrap());
    let (ba, bb) = if bells {
        (
            Some(Doorbell::new().unwrap()),
            Some(Doorbell::new().unwrap()),
        )
    } else {
        (None, None)
    };
    let (ping, pong) = (
        bell_on(Ring::create(&a).unwrap(), ba.as_ref()),
        bell_on(Ring::create(&b).unwrap(), bb.as_ref()),
    );
    let pid = fork_pinned(|| {
        let mut rx = bell_on(Ring::open(&a).unwrap(), ba.as_ref())
            .into_reader()
            .unwrap();
        let mut tx = bell_on(Ring::open(&b).unwrap(), bb.as_ref())
            .into_writer()
            .unwrap();
        rx.set_wait(wait);
        tx.set_wait(wait);
        let mut buf = [0u8; 64];
        for _ in 0..iters {
            let n = rx.recv(&mut buf).unwrap();
            tx.send(&buf[..n]).unwrap();
        }
        0
    });
    let mut tx = ping.into_writer().unwrap();
    let mut rx = pong.into_reader().unwrap();
    tx.set_wait(wait);
    rx.set_wait(wait);
    let mut msg = [0u8; 64];
    let mut back = [0u8; 64];
    let mut samples = Vec::with_capacity(iters);
    for k in 0..iters as u64 {
        stamp(&mut msg, k);
        let t = now_ns();
        tx.send(&msg).unwrap();
        let n = rx.recv(&mut back).unwrap();
        samples.push(now_ns() - t);
        assert_eq!(n, 64);
        check(&back, k);
    }
    bench::wait_ok(pid);
    Latency::of(&mut samples)
}

fn rtt_raw(spin: u64, iters: usize) -> Latency {
    let (ping, pong) = (raw::Ring::new(1 << 16, spin), raw::Ring::new(1 << 16, spin));
    let pid = fork_pinned(|| {
        let mut buf = [0u8; 64];
        for _ in 0..iters {
            ping.read_exact(&mut buf);
            pong.write(&buf);
        }
        0
    });
    let mut msg = [0u8; 64];
    let mut back = [0u8; 64];
    let mut samples = Vec::with_capacity(iters);
    for k in 0..iters as u64 {
        stamp(&mut msg, k);
        let t = now_ns();
        ping.write(&msg);
        pong.read_exact(&mut back);
        samples.push(now_ns() - t);
        check(&back, k);
    }
    bench::wait_ok(pid);
    Latency::of(&mut samples)
}

/// One 64-byte message of the one-way case: its sequence number in the first and last word,
/// multiples of it between (as `../shared/baseline/spsc64.c` writes them).
fn words64(k: u64) -> [u64; 8] {
    let m = |i: u64| k.wrapping_mul(i);
    [k, m(1), m(2), m(3), m(4), m(5), m(6), k]
}

/// Writes message `k` (the words of [`words64`]) into `b`, word by word.
fn fill64(b: &mut [u8; 64], k: u64) {
    for (chunk, x) in b.chunks_exact_mut(8).zip(words64(k)) {
        chunk.copy_from_slice(&x.to_le_bytes());
    }
}

/// The receiver's check of one 64-byte message (spsc64.c's): both stamps, and a sum of the
/// words between, returned so the compiler cannot drop the reads.
fn check64(b: &[u8], k: u64) -> u64 {
    let word = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap());
    assert!(
        word(0) == k && word(7) == k,
        "message {k}: stamps {}/{}",
        word(0),
        word(7)
    );
    (1..7).fold(0u64, |s, i| s.wrapping_add(word(i)))
}

/// 64-byte messages one way through `Ring` (4 MiB), every message checked: M messages/s.
/// With `bell`, both ends have a doorbell (nothing rings while both spin).
fn one_way_ours(n: u64, bell: bool) -> f64 {
    let seg = Anon::new(Ring::segment_size(RING).unwrap()).unwrap();
    seg.fill(0, seg.len(), 0).unwrap();
    let bell = bell.then(|| Doorbell::new().unwrap());
    let ring = bell_on(Ring::create(&seg).unwrap(), bell.as_ref());
    let go = Go::new();
    let pid = fork_pinned(|| {
        let mut w = bell_on(Ring::open(&seg).unwrap(), bell.as_ref())
            .into_writer()
            .unwrap();
        w.set_wait(Wait::SpinThenPark);
        let mut msg = [0u8; 64];
        go.wait();
        for k in 0..n {
            fill64(&mut msg, k);
            w.send(&msg).unwrap();
        }
        0
    });
    let mut r = ring.into_reader().unwrap();
    r.set_wait(Wait::SpinThenPark);
    let mut buf = [0u8; 64];
    let mut sum = 0u64;
    let t0 = Instant::now();
    go.start();
    for k in 0..n {
        let got = r.recv(&mut buf).unwrap();
        assert_eq!(got, 64);
        sum = sum.wrapping_add(check64(&buf, k));
    }
    let rate = n as f64 / t0.elapsed().as_secs_f64() / 1e6;
    std::hint::black_box(sum);
    bench::wait_ok(pid);
    rate
}

/// The same through the Rust port of `spsc64.c`: M messages/s.
fn one_way_spsc64(n: u64) -> f64 {
    let ring = raw::Spsc64::new();
    let go = Go::new();
    let pid = fork_pinned(|| {
        go.wait();
        ring.write_all(n);
        0
    });
    let t0 = Instant::now();
    go.start();
    let sum = ring.read_all(n);
    let rate = n as f64 / t0.elapsed().as_secs_f64() / 1e6;
    std::hint::black_box(sum);
    bench::wait_ok(pid);
    rate
}

/// Builds `benches/spsc64.c` with the C compiler (`$CC`, else `cc`) into the target directory;
/// `None`, after saying why, when there is no compiler.
fn build_spsc64_c() -> Option<std::path::PathBuf> {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/spsc64.c");
    let out = std::env::current_exe()
        .ok()?
        .with_file_name(format!("spsc64-c-{}", std::process::id()));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let built = std::process::Command::new(&cc)
        .args(["-O2", "-o"])
        .arg(&out)
        .arg(&src)
        .status();
    match built {
        Ok(s) if s.success() => Some(out),
        other => {
            eprintln!("shm bench: no spsc64.c row: `{cc} -O2 spsc64.c` failed ({other:?})");
            None
        }
    }
}

/// One run of the C program: M messages/s, from its own report (0 if it failed).
fn one_way_spsc64_c(program: &std::path::Path, n: u64) -> f64 {
    let out = std::process::Command::new(program)
        .arg(n.to_string())
        .stderr(std::process::Stdio::inherit())
        .output();
    let Ok(out) = out else { return 0.0 };
    // "50000000 msgs of 64 B in 0.766 s: 65.3 M msg/s (child 0)"
    let text = String::from_utf8_lossy(&out.stdout);
    let ok = out.status.success() && text.contains("(child 0)");
    text.split(": ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|v| v.parse().ok())
        .filter(|_| ok)
        .unwrap_or(0.0)
}

fn main() {
    let mode = Mode::from_env();
    let total: u64 = mode.pick(64 << 20, 512 << 20, 2 << 30);
    let iters: usize = mode.pick(2_000, 20_000, 100_000);
    let reps = mode.pick(1, 3, 5);
    // Two cores: the reader (this process) on one CPU, the writer (the child) on another, as
    // the raw baselines in ../shared/baseline do (PIN=split); the scheduler then cannot put both
    // on one CPU for part of a run. Restored at the end.
    let before = rustix::thread::sched_getaffinity(None).unwrap();
    let cpus: Vec<usize> = (0..CpuSet::MAX_CPU).filter(|&c| before.is_set(c)).collect();
    if cpus.len() >= 2 {
        pin(cpus[0]);
        CHILD_CPU.store(cpus[1], Ordering::Relaxed);
    }
    println!(
        "shm bench: {mode:?}, ring {} MiB, {} MiB per throughput run, {iters} round trips",
        RING >> 20,
        total >> 20
    );
    // IPC_SHM_BENCH_GROUPS=thr,oneway,spin,park,onecore runs only those groups (all by default).
    let groups = std::env::var("IPC_SHM_BENCH_GROUPS").ok();
    let want = |g: &str| {
        groups
            .as_deref()
            .is_none_or(|l| l.split(',').any(|x| x == g))
    };

    let sizes = [(4 << 10, "4 KiB"), (64 << 10, "64 KiB"), (1 << 20, "1 MiB")];
    for (chunk, name) in sizes.into_iter().filter(|_| want("thr")) {
        // Best of `reps` interleaved runs: the machine is shared, so single runs are noisy.
        let (mut ours, mut rawr, mut pipe) = (0f64, 0f64, 0f64);
        for _ in 0..reps {
            ours = ours.max(thr_ours(chunk, total));
            rawr = rawr.max(thr_raw(chunk, total));
            pipe = pipe.max(thr_pipe(chunk, total));
        }
        let is64 = chunk == 64 << 10;
        let case = format!("{name} messages, 4 MiB ring");
        emit_throughput("shm", &case, ours, rawr, "raw ring", is64.then_some(0.9));
        emit_throughput("shm", &case, ours, pipe, "plain pipe", is64.then_some(5.0));
    }

    // 64-byte messages one way: ours against the Rust port of spsc64.c, interleaved.
    if want("oneway") {
        one_way_case(mode.pick(2_000_000, 20_000_000, 50_000_000), reps);
    }

    // Each latency group: per contender, the run with the lowest p50 of `reps` runs, the
    // contenders alternating run by run.
    let best = |fs: &[&dyn Fn() -> Latency]| -> Vec<Latency> {
        let mut out: Vec<Option<Latency>> = vec![None; fs.len()];
        for _ in 0..reps {
            for (f, o) in fs.iter().zip(out.iter_mut()) {
                let l = f();
                if o.is_none_or(|b| l.p50_us < b.p50_us) {
                    *o = Some(l);
                }
            }
        }
        out.into_iter().map(Option::unwrap).collect()
    };
    if want("spin") {
        spin_case(iters, &best);
    }
    if want("park") {
        let got = best(&[&|| rtt_ours(Wait::Park, iters), &|| rtt_raw(0, iters)]);
        let (park, futex) = (got[0], got[1]);
        emit_latency(
            "shm",
            "64 B round trip, park only",
            park,
            futex,
            "raw futex ring",
            None,
        );
    }
    if want("onecore") {
        // One core: both processes pinned to the same CPU.
        pin(cpus[0]);
        CHILD_CPU.store(cpus[0], Ordering::Relaxed);
        let iters1 = iters / 4;
        let got = best(&[&|| rtt_ours(Wait::Adaptive, iters1), &|| rtt_raw(0, iters1)]);
        let (adaptive, futex1) = (got[0], got[1]);
        rustix::thread::sched_setaffinity(None, &before).unwrap();
        CHILD_CPU.store(usize::MAX, Ordering::Relaxed);
        emit_latency(
            "shm",
            "64 B round trip, 1 core (pinned), adaptive",
            adaptive,
            futex1,
            "raw futex ring, 1 core",
            Some(1.5),
        );
    }
}

/// 64-byte messages one way: ours against the Rust port of spsc64.c, and ours with a doorbell
/// on both ends, alternating.
fn one_way_case(msgs: u64, reps: usize) {
    let c_program = build_spsc64_c();
    let (mut ours64, mut spsc, mut belled, mut c) = (0f64, 0f64, 0f64, 0f64);
    for _ in 0..reps {
        ours64 = ours64.max(one_way_ours(msgs, false));
        spsc = spsc.max(one_way_spsc64(msgs));
        belled = belled.max(one_way_ours(msgs, true));
        if let Some(path) = &c_program {
            c = c.max(one_way_spsc64_c(path, msgs));
        }
    }
    if let Some(path) = &c_program {
        let _ = std::fs::remove_file(path);
    }
    // The floor is the C program itself (`../shared/baseline/spsc64.c`, copied here):
    // target 0.5. The Rust port writes its words straight into the slot and runs faster than
    // the C program on this machine; it is shown for comparison, without a target.
    if c > 0.0 {
        bench::Row {
            group: "shm",
            case: "64 B messages one way, 4 MiB ring",
            metric: "M msg/s",
            unit: "M msg/s",
            better: bench::Better::Higher,
            ours: ours64,
            baseline: c,
            baseline_name: "spsc64.c, gcc -O2",
            target: Some(0.5),
        }
        .emit();
    }
    bench::Row {
        group: "shm",
        case: "64 B messages one way, 4 MiB ring",
        metric: "M msg/s",
        unit: "M msg/s",
        better: bench::Better::Higher,
        ours: ours64,
        baseline: spsc,
        baseline_name: "spsc64 (Rust port)",
        target: None,
    }
    .emit();
    // A doorbell costs the spinning fast path nothing (issue 13: within 5 %).
    bench::Row {
        group: "shm",
        case: "64 B messages one way, doorbell on both ends",
        metric: "M msg/s",
        unit: "M msg/s",
        better: bench::Better::Higher,
        ours: belled,
        baseline: ours64,
        baseline_name: "the ring without doorbell",
        target: Some(0.95),
    }
    .emit();
}

/// Runs latency contenders alternately: the best run of each.
type Best<'a> = dyn Fn(&[&dyn Fn() -> Latency]) -> Vec<Latency> + 'a;

/// 64-byte round trips with both sides spinning: ours, the busy-poll floor, ours with
/// doorbells, ours adaptive, alternating.
fn spin_case(iters: usize, best: &Best<'_>) {
    let got = best(&[
        &|| rtt_ours(Wait::SpinThenPark, iters),
        &|| rtt_raw(u64::MAX, iters), // spins forever, never wakes: the hardware floor
        &|| rtt_ours_bell(Wait::SpinThenPark, iters, true),
        &|| rtt_ours(Wait::Adaptive, iters),
    ]);
    let (spin, floor, spin_bell, adaptive2) = (got[0], got[1], got[2], got[3]);
    emit_latency(
        "shm",
        "64 B round trip, spin then park, 2 cores",
        spin,
        floor,
        "busy-poll floor",
        Some(2.0),
    );
    emit_latency(
        "shm",
        "64 B round trip, spin then park, doorbell on every end",
        spin_bell,
        spin,
        "the ring without doorbell",
        Some(1.05),
    );
    emit_latency(
        "shm",
        "64 B round trip, adaptive (default), 2 cores",
        adaptive2,
        floor,
        "busy-poll floor",
        None,
    );
}

/// The baseline: the byte ring of `../shared/baseline/thr.c` (head/tail on separate lines,
/// spin then futex with announced waiters), and a plain pipe, on libc and atomics.
mod raw {
    use std::ptr;
    use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

    /// Pauses a blocked side spins before it sleeps (thr.c's default).
    pub(crate) const SPIN: u64 = 2000;

    #[repr(C, align(128))]
    struct Line<T>(T);

    #[repr(C)]
    struct Ctl {
        head: Line<AtomicU64>,
        tail: Line<AtomicU64>,
        data: Line<(AtomicU32, AtomicU32)>,
        space: Line<(AtomicU32, AtomicU32)>,
    }

    pub(crate) struct Ring {
        ctl: *const Ctl,
        buf: *mut u8,
        size: usize,
        spin: u64,
    }

    fn futex(word: &AtomicU32, op: i32, val: u32) {
        // SAFETY: `word` is a live `AtomicU32` in shared memory; no timeout or second address.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                op,
                val,
                ptr::null::<libc::timespec>(),
                ptr::null::<u32>(),
                0,
            )
        };
    }

    fn post((seq, waiters): &(AtomicU32, AtomicU32)) {
        seq.fetch_add(1, Ordering::SeqCst);
        if waiters.load(Ordering::SeqCst) != 0 {
            futex(seq, libc::FUTEX_WAKE, 1);
        }
    }

    fn wait_until(spin: u64, (seq, waiters): &(AtomicU32, AtomicU32), cond: impl Fn() -> bool) {
        let mut i = 0;
        while i < spin && !cond() {
            std::hint::spin_loop();
            i += 1;
        }
        while !cond() {
            let s = seq.load(Ordering::SeqCst);
            waiters.fetch_add(1, Ordering::SeqCst);
            if !cond() && seq.load(Ordering::SeqCst) == s {
                futex(seq, libc::FUTEX_WAIT, s);
            }
            waiters.fetch_sub(1, Ordering::SeqCst);
        }
    }

    impl Ring {
        pub(crate) fn new(size: usize, spin: u64) -> Ring {
            let len = size_of::<Ctl>() + size;
            // SAFETY: a fresh anonymous shared mapping; never unmapped (the bench exits).
            let p = unsafe {
                libc::mmap(
                    ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            assert_ne!(p, libc::MAP_FAILED);
            let p = p.cast::<u8>();
            // SAFETY: pre-faults the fresh mapping of `len` bytes (zeros are valid atomics).
            unsafe { ptr::write_bytes(p, 0, len) };
            Ring {
                ctl: p.cast(),
                buf: p.wrapping_add(size_of::<Ctl>()),
                size,
                spin,
            }
        }

        fn ctl(&self) -> &Ctl {
            // SAFETY: the mapping is live, zero-initialised (valid atomics) and aligned.
            unsafe { &*self.ctl }
        }

        pub(crate) fn write(&self, mut src: &[u8]) {
            let c = self.ctl();
            while !src.is_empty() {
                let h = c.head.0.load(Ordering::Relaxed);
                wait_until(self.spin, &c.space.0, || {
                    (self.size as u64) > h - c.tail.0.load(Ordering::Acquire)
                });
                let free = self.size - (h - c.tail.0.load(Ordering::Acquire)) as usize;
                let k = src.len().min(free);
                let off = (h % self.size as u64) as usize;
                let first = k.min(self.size - off);
                // SAFETY: `off + first <= size` and `k - first <= size`: inside the data area.
                unsafe {
                    ptr::copy_nonoverlapping(src.as_ptr(), self.buf.wrapping_add(off), first)
                };
                // SAFETY: as above.
                unsafe { ptr::copy_nonoverlapping(src[first..].as_ptr(), self.buf, k - first) };
                c.head.0.store(h + k as u64, Ordering::SeqCst);
                if self.spin != u64::MAX {
                    post(&c.data.0); // a pure busy-poll ring has no sleepers to wake
                }
                src = &src[k..];
            }
        }

        pub(crate) fn read_exact(&self, mut dst: &mut [u8]) {
            let c = self.ctl();
            while !dst.is_empty() {
                let t = c.tail.0.load(Ordering::Relaxed);
                wait_until(self.spin, &c.data.0, || {
                    c.head.0.load(Ordering::Acquire) > t
                });
                let avail = (c.head.0.load(Ordering::Acquire) - t) as usize;
                let k = dst.len().min(avail);
                let off = (t % self.size as u64) as usize;
                let first = k.min(self.size - off);
                // SAFETY: inside the data area, as in `write`.
                unsafe {
                    ptr::copy_nonoverlapping(self.buf.wrapping_add(off), dst.as_mut_ptr(), first)
                };
                // SAFETY: as above.
                unsafe { ptr::copy_nonoverlapping(self.buf, dst[first..].as_mut_ptr(), k - first) };
                c.tail.0.store(t + k as u64, Ordering::SeqCst);
                if self.spin != u64::MAX {
                    post(&c.space.0);
                }
                dst = &mut dst[k..];
            }
        }
    }

    // SAFETY: the ring is used by one thread in each of two processes.
    unsafe impl Sync for Ring {}

    /// Slots of the spsc64 ring: 4 MiB of 64-byte slots.
    const SLOTS: usize = 1 << 16;

    /// The Rust port of `../shared/baseline/spsc64.c`: fixed 64-byte slots, each side caching
    /// the other's index and publishing its own every 16 messages (and when it catches up).
    pub(crate) struct Spsc64 {
        head: *const AtomicU64,
        tail: *const AtomicU64,
        slots: *mut u8,
    }

    // SAFETY: the ring is used by one thread in each of two processes.
    unsafe impl Sync for Spsc64 {}

    impl Spsc64 {
        pub(crate) fn new() -> Spsc64 {
            let len = 256 + SLOTS * 64;
            // SAFETY: a fresh anonymous shared mapping; never unmapped (the bench exits).
            let p = unsafe {
                libc::mmap(
                    ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            assert_ne!(p, libc::MAP_FAILED);
            let p = p.cast::<u8>();
            // SAFETY: pre-faults the fresh mapping of `len` bytes (zeros are valid atomics).
            unsafe { ptr::write_bytes(p, 0, len) };
            Spsc64 {
                head: p.cast(),
                tail: p.wrapping_add(128).cast(),
                slots: p.wrapping_add(256),
            }
        }

        fn head(&self) -> &AtomicU64 {
            // SAFETY: a live, zeroed, aligned word of the mapping.
            unsafe { &*self.head }
        }

        fn tail(&self) -> &AtomicU64 {
            // SAFETY: as `head`.
            unsafe { &*self.tail }
        }

        /// Writes messages `0..n` (the writer's loop of spsc64.c).
        pub(crate) fn write_all(&self, n: u64) {
            let (mut head, mut tail_cache) = (0u64, 0u64);
            while head < n {
                if head - tail_cache >= SLOTS as u64 {
                    loop {
                        tail_cache = self.tail().load(Ordering::Acquire);
                        if head - tail_cache < SLOTS as u64 {
                            break;
                        }
                        std::hint::spin_loop();
                    }
                }
                // The words go straight into the slot (spsc64.c builds them on the stack and
                // copies them, which costs gcc -O2 a store-forwarding stall per message: the
                // protocol is the point here, not that stall).
                let slot = self.slots.wrapping_add((head as usize & (SLOTS - 1)) * 64);
                for (i, x) in super::words64(head).into_iter().enumerate() {
                    // SAFETY: 8 bytes at `i * 8 < 64` inside the 64-byte slot of the mapping.
                    unsafe {
                        slot.wrapping_add(i * 8)
                            .cast::<u64>()
                            .write_unaligned(x.to_le())
                    };
                }
                head += 1;
                if head & 15 == 0 || head == n {
                    self.head().store(head, Ordering::Release);
                }
            }
        }

        /// Reads and checks messages `0..n` (the reader's loop of spsc64.c); returns the sum.
        pub(crate) fn read_all(&self, n: u64) -> u64 {
            let (mut tail, mut head_cache, mut sum) = (0u64, 0u64, 0u64);
            while tail < n {
                if tail == head_cache {
                    loop {
                        head_cache = self.head().load(Ordering::Acquire);
                        if head_cache != tail {
                            break;
                        }
                        std::hint::spin_loop();
                    }
                }
                let mut b = [0u8; 64];
                let slot = self.slots.wrapping_add((tail as usize & (SLOTS - 1)) * 64);
                // SAFETY: as in `write_all`.
                unsafe { ptr::copy_nonoverlapping(slot, b.as_mut_ptr(), 64) };
                sum = sum.wrapping_add(super::check64(&b, tail));
                tail += 1;
                if tail & 15 == 0 || tail == head_cache {
                    self.tail().store(tail, Ordering::Release);
                }
            }
            self.tail().store(tail, Ordering::Release);
            sum
        }
    }

    pub(crate) fn pipe() -> (i32, i32) {
        let mut fds = [0; 2];
        // SAFETY: `fds` is a valid array of two ints.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        (fds[0], fds[1])
    }

    pub(crate) fn close(fd: i32) {
        // SAFETY: closes a descriptor this bench owns, once.
        unsafe { libc::close(fd) };
    }

    pub(crate) fn write_all(fd: i32, mut src: &[u8]) {
        while !src.is_empty() {
            // SAFETY: `src` is valid for `src.len()` bytes.
            let n = unsafe { libc::write(fd, src.as_ptr().cast(), src.len()) };
            assert!(n > 0, "write: {}", std::io::Error::last_os_error());
            src = &src[n as usize..];
        }
    }

    pub(crate) fn read_exact(fd: i32, mut dst: &mut [u8]) {
        while !dst.is_empty() {
            // SAFETY: `dst` is valid for writes of `dst.len()` bytes.
            let n = unsafe { libc::read(fd, dst.as_mut_ptr().cast(), dst.len()) };
            assert!(n > 0, "read: {}", std::io::Error::last_os_error());
            dst = &mut dst[n as usize..];
        }
    }
}
