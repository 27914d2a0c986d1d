//! Ping-pong between two processes with each kind of semaphore (POSIX named, POSIX unnamed,
//! System V, eventfd) and the uncontended post+wait cost of a POSIX semaphore, each through
//! ipc-sem and through raw libc calls in the same run.
//!
//! `IPC_BENCH=smoke|quick|full` sets the length. The child counts the units it received and
//! fails unless it got exactly one per round and nothing more; the parent checks the same.
#![allow(unsafe_code)] // The raw libc baseline; each block carries its SAFETY note.
#![allow(missing_docs)]

use std::ffi::CString;
use std::time::{Duration, Instant};

use ipc_sem::{EventSemaphore, Key, NamedSemaphore, SemOp, SemSet, SharedSemaphore};
use ipc_testkit::bench::{Latency, Mode, Row, emit_latency, fork, now_ns, wait_ok};

const GROUP: &str = "sem";
const RAW: &str = "raw libc";

/// One side of a ping-pong: post to the peer, wait for the peer, and "is a unit left over?".
struct Side<'a> {
    post: Box<dyn Fn() + 'a>,
    wait: Box<dyn Fn() + 'a>,
    leftover: Box<dyn Fn() -> bool + 'a>,
}

/// `rounds` round trips: the parent posts `a` and waits on `b`; the forked child waits on `a`
/// and posts `b`. Returns one latency sample per round trip (ns).
fn pingpong(rounds: usize, parent: &Side<'_>, child: &Side<'_>) -> Vec<u64> {
    let pid = fork(|| {
        pin(child_cpu());
        for _ in 0..rounds {
            (child.wait)();
            (child.post)();
        }
        // Exactly `rounds` units arrived: nothing is left over.
        if (child.leftover)() { 1 } else { 0 }
    });
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = now_ns();
        (parent.post)();
        (parent.wait)();
        samples.push(now_ns() - t);
    }
    wait_ok(pid);
    assert!(
        !(parent.leftover)(),
        "the parent got more units than it posted for"
    );
    samples
}

/// Runs ours and raw alternately in `chunks` batches, so both see the same machine load.
fn compare(
    case: &str,
    rounds: usize,
    ours: impl Fn(usize) -> Vec<u64>,
    raw: impl Fn(usize) -> Vec<u64>,
) {
    compare_with(case, rounds, ours, raw, RAW, Some(1.05));
}

/// [`compare`] with another baseline and target.
fn compare_with(
    case: &str,
    rounds: usize,
    ours: impl Fn(usize) -> Vec<u64>,
    raw: impl Fn(usize) -> Vec<u64>,
    baseline_name: &str,
    target: Option<f64>,
) {
    let chunks = if rounds >= 10_000 { 20 } else { 2 };
    let per = (rounds / chunks).max(10);
    let (mut o, mut r) = (Vec::new(), Vec::new());
    // Warm-up (not recorded).
    ours(per.min(200));
    raw(per.min(200));
    for _ in 0..chunks {
        o.extend(ours(per));
        r.extend(raw(per));
    }
    emit_latency(
        GROUP,
        case,
        Latency::of(&mut o),
        Latency::of(&mut r),
        baseline_name,
        target,
    );
}

/// The CPU of the child: 0 like the parent by default (each round trip is then two context
/// switches on one CPU: the setting where per-call overhead shows most and runs repeat best);
/// `IPC_SEM_PIN=split` puts it on CPU 1 (a cross-CPU wake-up, dominated by idle-state exit).
fn child_cpu() -> usize {
    if std::env::var("IPC_SEM_PIN").as_deref() == Ok("split") {
        1
    } else {
        0
    }
}

/// Pins the calling process to `cpu` if the machine has it (`sched_setaffinity`).
fn pin(cpu: usize) {
    // SAFETY: no preconditions.
    let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if cpu as libc::c_long >= online {
        return;
    }
    // SAFETY: an all-zero cpu_set_t is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is below the number of online CPUs, far below CPU_SETSIZE.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 is this process.
    let rc = unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        eprintln!(
            "sem bench: cannot pin to CPU {cpu}: {}",
            std::io::Error::last_os_error()
        );
    }
}

fn check(rc: i32, what: &str) {
    assert!(rc == 0, "{what}: {}", std::io::Error::last_os_error());
}

// ---- POSIX named ----------------------------------------------------------------------------

fn named_ours(rounds: usize) -> Vec<u64> {
    let a = NamedSemaphore::create(&ipc_testkit::posix_name("bna"), 0).unwrap();
    let b = NamedSemaphore::create(&ipc_testkit::posix_name("bnb"), 0).unwrap();
    let side = |x: &'static str| -> Side<'_> {
        let (p, w) = if x == "parent" { (&a, &b) } else { (&b, &a) };
        Side {
            post: Box::new(move || p.post().unwrap()),
            wait: Box::new(move || w.wait().unwrap()),
            leftover: Box::new(move || w.try_wait().is_ok()),
        }
    };
    pingpong(rounds, &side("parent"), &side("child"))
}

struct RawSem(*mut libc::sem_t);

impl RawSem {
    fn post(&self) {
        // SAFETY: the pointer is an open/initialised semaphore for the bench's lifetime.
        check(unsafe { libc::sem_post(self.0) }, "sem_post");
    }
    fn wait(&self) {
        // SAFETY: as above.
        while unsafe { libc::sem_wait(self.0) } != 0 {
            assert_eq!(
                std::io::Error::last_os_error().raw_os_error(),
                Some(libc::EINTR)
            );
        }
    }
    fn try_wait(&self) -> bool {
        // SAFETY: as above.
        unsafe { libc::sem_trywait(self.0) == 0 }
    }
}

fn raw_sides<'a>(a: &'a RawSem, b: &'a RawSem) -> (Side<'a>, Side<'a>) {
    let side = |p: &'a RawSem, w: &'a RawSem| Side {
        post: Box::new(move || p.post()),
        wait: Box::new(move || w.wait()),
        leftover: Box::new(move || w.try_wait()),
    };
    (side(a, b), side(b, a))
}

fn raw_named_open(tag: &str) -> RawSem {
    let name = CString::new(ipc_testkit::posix_name(tag)).unwrap();
    // SAFETY: `name` is NUL-terminated; O_CREAT takes a mode and an initial value.
    let s = unsafe {
        libc::sem_open(
            name.as_ptr(),
            libc::O_CREAT | libc::O_EXCL,
            0o600 as libc::c_uint,
            0 as libc::c_uint,
        )
    };
    assert!(s != libc::SEM_FAILED, "sem_open");
    // SAFETY: `name` is NUL-terminated. The mapping survives the unlink and is inherited.
    check(unsafe { libc::sem_unlink(name.as_ptr()) }, "sem_unlink");
    RawSem(s)
}

fn named_raw(rounds: usize) -> Vec<u64> {
    let a = raw_named_open("bra");
    let b = raw_named_open("brb");
    let (p, c) = raw_sides(&a, &b);
    let v = pingpong(rounds, &p, &c);
    drop((p, c));
    for s in [a, b] {
        // SAFETY: opened by sem_open above and not used afterwards.
        unsafe { libc::sem_close(s.0) };
    }
    v
}

// ---- POSIX unnamed --------------------------------------------------------------------------

fn unnamed_ours(rounds: usize) -> Vec<u64> {
    let a = SharedSemaphore::new(0).unwrap();
    let b = SharedSemaphore::new(0).unwrap();
    let side = |p: &'static str| -> Side<'_> {
        let (p, w) = if p == "parent" { (&a, &b) } else { (&b, &a) };
        Side {
            post: Box::new(move || p.post().unwrap()),
            wait: Box::new(move || w.wait().unwrap()),
            leftover: Box::new(move || w.try_wait().is_ok()),
        }
    };
    pingpong(rounds, &side("parent"), &side("child"))
}

/// Two `sem_t` in one anonymous shared page.
struct RawPage(*mut libc::c_void);

impl RawPage {
    fn new() -> RawPage {
        // SAFETY: a fresh anonymous shared mapping aliases nothing.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert!(p != libc::MAP_FAILED, "mmap");
        RawPage(p)
    }
    fn sem(&self, i: usize) -> RawSem {
        // SAFETY: `i` < 2 keeps the pointer inside the 4096-byte page.
        let s = unsafe { self.0.cast::<libc::sem_t>().add(i) };
        // SAFETY: `s` is aligned, writable, shared, initialised once here.
        check(unsafe { libc::sem_init(s, 1, 0) }, "sem_init");
        RawSem(s)
    }
}

impl Drop for RawPage {
    fn drop(&mut self) {
        // SAFETY: our mapping, not used after this.
        unsafe { libc::munmap(self.0, 4096) };
    }
}

fn unnamed_raw(rounds: usize) -> Vec<u64> {
    let page = RawPage::new();
    let (a, b) = (page.sem(0), page.sem(1));
    let (p, c) = raw_sides(&a, &b);
    pingpong(rounds, &p, &c)
}

// ---- System V -------------------------------------------------------------------------------

fn sysv_ours(rounds: usize) -> Vec<u64> {
    // A key in the workspace's range, so that `cargo xtask clean` finds it after a crash.
    let set = loop {
        match SemSet::create(Key::new(ipc_testkit::sysv_key()), &[0, 0]) {
            Err(ipc_sem::Error::AlreadyExists { .. }) => continue,
            r => break r.unwrap(),
        }
    };
    let set = &set;
    let side = |mine: usize, peer: usize| Side {
        post: Box::new(move || set.apply(&[SemOp::post(peer)]).unwrap()),
        wait: Box::new(move || set.apply(&[SemOp::wait(mine)]).unwrap()),
        leftover: Box::new(move || set.try_apply(&[SemOp::wait(mine)]).is_ok()),
    };
    pingpong(rounds, &side(1, 0), &side(0, 1))
}

fn raw_semop(id: i32, num: u16, op: i16, flg: i16) -> bool {
    let mut b = libc::sembuf {
        sem_num: num,
        sem_op: op,
        sem_flg: flg,
    };
    loop {
        // SAFETY: `b` is one valid sembuf.
        if unsafe { libc::semop(id, &mut b, 1) } == 0 {
            return true;
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) => return false,
            e => panic!("semop: {e:?}"),
        }
    }
}

fn sysv_raw(rounds: usize) -> Vec<u64> {
    let id = loop {
        let flags = libc::IPC_CREAT | libc::IPC_EXCL | 0o600;
        // SAFETY: plain integer arguments.
        let id = unsafe { libc::semget(ipc_testkit::sysv_key(), 2, flags) };
        if id >= 0 {
            break id;
        }
        let e = std::io::Error::last_os_error();
        assert_eq!(e.raw_os_error(), Some(libc::EEXIST), "semget: {e}");
    };
    let side = |mine: u16, peer: u16| Side {
        post: Box::new(move || assert!(raw_semop(id, peer, 1, 0))),
        wait: Box::new(move || assert!(raw_semop(id, mine, -1, 0))),
        leftover: Box::new(move || raw_semop(id, mine, -1, libc::IPC_NOWAIT as i16)),
    };
    let v = pingpong(rounds, &side(1, 0), &side(0, 1));
    // SAFETY: IPC_RMID takes no fourth argument.
    unsafe { libc::semctl(id, 0, libc::IPC_RMID) };
    v
}

// ---- eventfd --------------------------------------------------------------------------------

fn eventfd_ours(rounds: usize) -> Vec<u64> {
    let a = EventSemaphore::new(0).unwrap();
    let b = EventSemaphore::new(0).unwrap();
    let side = |p: &'static str| -> Side<'_> {
        let (p, w) = if p == "parent" { (&a, &b) } else { (&b, &a) };
        Side {
            post: Box::new(move || p.post().unwrap()),
            wait: Box::new(move || w.wait().unwrap()),
            leftover: Box::new(move || w.try_wait().is_ok()),
        }
    };
    pingpong(rounds, &side("parent"), &side("child"))
}

fn eventfd_raw(rounds: usize) -> Vec<u64> {
    // SAFETY: plain integer arguments; the descriptors are closed below.
    let a = unsafe { libc::eventfd(0, libc::EFD_SEMAPHORE | libc::EFD_CLOEXEC) };
    // SAFETY: as above.
    let b = unsafe { libc::eventfd(0, libc::EFD_SEMAPHORE | libc::EFD_CLOEXEC) };
    assert!(a >= 0 && b >= 0, "eventfd");
    let post = |fd: i32| {
        let one = 1u64;
        // SAFETY: writes 8 bytes from a valid u64.
        let n = unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
        assert_eq!(n, 8);
    };
    let wait = |fd: i32| {
        let mut v = 0u64;
        // SAFETY: reads 8 bytes into a valid u64.
        let n = unsafe { libc::read(fd, (&mut v as *mut u64).cast(), 8) };
        assert_eq!(n, 8);
    };
    let leftover = |fd: i32| {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout.
        unsafe { libc::poll(&mut p, 1, 0) == 1 }
    };
    let side = |p: i32, w: i32| Side {
        post: Box::new(move || post(p)),
        wait: Box::new(move || wait(w)),
        leftover: Box::new(move || leftover(w)),
    };
    let v = pingpong(rounds, &side(a, b), &side(b, a));
    for fd in [a, b] {
        // SAFETY: our descriptors, not used afterwards.
        unsafe { libc::close(fd) };
    }
    v
}

// ---- uncontended post + wait ----------------------------------------------------------------

/// ns per post+wait pair, best of `reps` batches of `n`.
fn per_op(n: usize, reps: usize, f: impl Fn()) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..reps {
        let t = Instant::now();
        for _ in 0..n {
            f();
        }
        best = best.min(t.elapsed().as_nanos() as f64 / n as f64);
    }
    best
}

fn uncontended(mode: Mode) {
    let n = mode.pick(10_000, 1_000_000, 5_000_000);
    let reps = mode.pick(2, 5, 7);
    let shared = SharedSemaphore::new(0).unwrap();
    let named = NamedSemaphore::create(&ipc_testkit::posix_name("bun"), 0).unwrap();
    let page = RawPage::new();
    let raw = page.sem(0);
    let raw_named = raw_named_open("brun");
    // Interleave so both see the same conditions; each figure is the best batch.
    let mut figures = [f64::MAX; 4];
    for _ in 0..2 {
        figures[0] = figures[0].min(per_op(n, reps, || {
            shared.post().unwrap();
            shared.wait().unwrap();
        }));
        figures[1] = figures[1].min(per_op(n, reps, || {
            raw.post();
            raw.wait();
        }));
        figures[2] = figures[2].min(per_op(n, reps, || {
            named.post().unwrap();
            named.wait().unwrap();
        }));
        figures[3] = figures[3].min(per_op(n, reps, || {
            raw_named.post();
            raw_named.wait();
        }));
    }
    for (case, ours, base) in [
        ("uncontended post+wait, unnamed", figures[0], figures[1]),
        ("uncontended post+wait, named", figures[2], figures[3]),
    ] {
        Row {
            group: GROUP,
            case,
            metric: "ns/op",
            unit: "ns",
            better: ipc_testkit::bench::Better::Lower,
            ours,
            baseline: base,
            baseline_name: RAW,
            target: Some(1.5),
        }
        .emit();
    }
    // The target also says "no system call": prove it rather than infer it from the time.
    no_syscall("unnamed", || shared.post().is_ok() && shared.wait().is_ok());
    no_syscall("named", || named.post().is_ok() && named.wait().is_ok());
    // SAFETY: opened by sem_open, not used afterwards.
    unsafe { libc::sem_close(raw_named.0) };
}

/// Runs 100,000 `pair`s in a forked child under seccomp strict mode, where any system call but
/// read, write, exit and sigreturn is killed with SIGKILL: the child survives only if the
/// uncontended post+wait never enters the kernel.
fn no_syscall(kind: &str, pair: impl Fn() -> bool) {
    let pid = fork(|| {
        // SAFETY: PR_SET_SECCOMP with SECCOMP_MODE_STRICT takes no pointer arguments.
        if unsafe { libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_STRICT) } != 0 {
            return 3;
        }
        let ok = (0..100_000).all(|_| pair());
        // Strict mode allows `exit` but not the `exit_group` that `_exit` makes.
        // SAFETY: ends this single-threaded child at once.
        unsafe { libc::syscall(libc::SYS_exit, if ok { 0 } else { 4 }) };
        unreachable!()
    });
    let mut status = 0;
    // SAFETY: `pid` is our child; `status` is a valid out location.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    match (libc::WIFEXITED(status), libc::WEXITSTATUS(status)) {
        (true, 0) => eprintln!(
            "sem bench: uncontended post+wait, {kind}: no system call (checked under seccomp strict mode)"
        ),
        (true, 3) => {
            eprintln!("sem bench: seccomp strict mode unavailable; no-syscall check skipped")
        }
        _ => panic!(
            "sem bench: uncontended post+wait, {kind}: the checker died (status {status:#x}): it made a system call"
        ),
    }
}

fn main() {
    #[cfg(feature = "tokio")]
    if let Ok(kind) = std::env::var(asynch::PEER_ENV) {
        asynch::peer(&kind);
        return;
    }
    let mode = Mode::from_env();
    pin(0);
    let rounds = mode.pick(200, 10_000, 100_000);
    let start = Instant::now();
    // Warm-up: CPU frequency and caches settle before the first measured case.
    unnamed_raw(mode.pick(100, 5_000, 20_000));
    compare("ping-pong, POSIX named", rounds, named_ours, named_raw);
    compare(
        "ping-pong, POSIX unnamed",
        rounds,
        unnamed_ours,
        unnamed_raw,
    );
    compare("ping-pong, System V", rounds, sysv_ours, sysv_raw);
    compare("ping-pong, eventfd", rounds, eventfd_ours, eventfd_raw);
    uncontended(mode);
    // Last: the async forms start a waiter thread, and `bench::fork` needs a single thread.
    #[cfg(feature = "tokio")]
    asynch::run(mode);
    if start.elapsed() > Duration::from_secs(600) {
        eprintln!("sem bench: took {:?}", start.elapsed());
    }
}

/// The await-able forms (feature `tokio`) against the blocking forms of ipc-sem, in the same
/// run: what a wake-up costs through tokio's reactor (eventfd) and through the waiter thread
/// (POSIX, System V), and what an async lock and unlock of a robust mutex costs (two hand-offs
/// to the waiter thread). No targets: these say what the async forms cost.
///
/// The peer is this bench binary run again with a role (the parent is no longer single-threaded
/// once an async wait has started the waiter thread, so it does not fork).
#[cfg(feature = "tokio")]
mod asynch {
    use std::os::fd::{AsFd, OwnedFd};
    use std::process::{Command, Stdio};

    use ipc_sem::{
        AsyncEventSemaphore, AsyncMutex, AsyncSemSet, AsyncSemaphore, EventSemaphore,
        NamedSemaphore, SemOp, SemSet, SharedMutex,
    };
    use ipc_testkit::bench::{Better, Mode, Row, now_ns};

    use super::{GROUP, compare_with, per_op, pin};

    pub(super) const PEER_ENV: &str = "IPC_SEM_BENCH_PEER";
    const ROUNDS_ENV: &str = "IPC_SEM_BENCH_ROUNDS";
    const A_ENV: &str = "IPC_SEM_BENCH_A";
    const B_ENV: &str = "IPC_SEM_BENCH_B";
    const BLOCKING: &str = "blocking ipc-sem";

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// The peer's side of a ping-pong: `rounds` times, wait for `a`, post `b` (blocking forms).
    pub(super) fn peer(kind: &str) {
        pin(super::child_cpu());
        let rounds: usize = std::env::var(ROUNDS_ENV).unwrap().parse().unwrap();
        let env = |k| std::env::var(k).unwrap();
        match kind {
            "named" => {
                let a = NamedSemaphore::open(&env(A_ENV)).unwrap();
                let b = NamedSemaphore::open(&env(B_ENV)).unwrap();
                for _ in 0..rounds {
                    a.wait().unwrap();
                    b.post().unwrap();
                }
                assert!(a.try_wait().is_err(), "a unit too many");
            }
            "eventfd" => {
                let a = NamedSemaphore::open(&env(A_ENV)).unwrap();
                let b =
                    EventSemaphore::from(std::io::stdin().as_fd().try_clone_to_owned().unwrap());
                for _ in 0..rounds {
                    a.wait().unwrap();
                    b.post().unwrap();
                }
                assert!(a.try_wait().is_err(), "a unit too many");
            }
            "sysv" => {
                let set = SemSet::open_id(env(A_ENV).parse().unwrap()).unwrap();
                for _ in 0..rounds {
                    set.apply(&[SemOp::wait(0)]).unwrap();
                    set.apply(&[SemOp::post(1)]).unwrap();
                }
                assert!(set.try_apply(&[SemOp::wait(0)]).is_err(), "a unit too many");
            }
            other => panic!("unknown peer {other}"),
        }
    }

    fn start_peer(
        kind: &str,
        rounds: usize,
        setup: impl FnOnce(&mut Command),
    ) -> std::process::Child {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.env(PEER_ENV, kind).env(ROUNDS_ENV, rounds.to_string());
        setup(&mut cmd);
        cmd.spawn().unwrap()
    }

    fn finish(mut child: std::process::Child) {
        assert!(child.wait().unwrap().success(), "the bench peer failed");
    }

    /// One ping-pong of `rounds` on named semaphores; the parent waits async or blocking.
    fn named(rounds: usize, asynchronous: bool) -> Vec<u64> {
        let (na, nb) = (
            ipc_testkit::posix_name("bxa"),
            ipc_testkit::posix_name("bxb"),
        );
        let a = NamedSemaphore::create(&na, 0).unwrap();
        let b = AsyncSemaphore::new(NamedSemaphore::create(&nb, 0).unwrap());
        let child = start_peer("named", rounds, |c| {
            c.env(A_ENV, &na).env(B_ENV, &nb);
        });
        let mut samples = Vec::with_capacity(rounds);
        runtime().block_on(async {
            for _ in 0..rounds {
                let t = now_ns();
                a.post().unwrap();
                if asynchronous {
                    b.wait().await.unwrap();
                } else {
                    b.get_ref().wait().unwrap();
                }
                samples.push(now_ns() - t);
            }
        });
        finish(child);
        assert!(b.try_wait().is_err(), "a unit too many");
        samples
    }

    fn eventfd(rounds: usize, asynchronous: bool) -> Vec<u64> {
        let na = ipc_testkit::posix_name("bxe");
        let a = NamedSemaphore::create(&na, 0).unwrap();
        let b = EventSemaphore::new(0).unwrap();
        let copy = OwnedFd::from(b.try_clone().unwrap());
        let child = start_peer("eventfd", rounds, |c| {
            c.env(A_ENV, &na).stdin(Stdio::from(copy));
        });
        let mut samples = Vec::with_capacity(rounds);
        runtime().block_on(async {
            if asynchronous {
                let b = AsyncEventSemaphore::new(b).unwrap();
                for _ in 0..rounds {
                    let t = now_ns();
                    a.post().unwrap();
                    b.wait().await.unwrap();
                    samples.push(now_ns() - t);
                }
            } else {
                for _ in 0..rounds {
                    let t = now_ns();
                    a.post().unwrap();
                    b.wait().unwrap();
                    samples.push(now_ns() - t);
                }
            }
        });
        finish(child);
        samples
    }

    fn sysv(rounds: usize, asynchronous: bool) -> Vec<u64> {
        let set = loop {
            match SemSet::create(ipc_sem::Key::new(ipc_testkit::sysv_key()), &[0, 0]) {
                Err(ipc_sem::Error::AlreadyExists { .. }) => continue,
                r => break AsyncSemSet::new(r.unwrap()),
            }
        };
        let child = start_peer("sysv", rounds, |c| {
            c.env(A_ENV, set.get_ref().id().to_string());
        });
        let mut samples = Vec::with_capacity(rounds);
        runtime().block_on(async {
            for _ in 0..rounds {
                let t = now_ns();
                set.get_ref().apply(&[SemOp::post(0)]).unwrap();
                if asynchronous {
                    set.apply(&[SemOp::wait(1)]).await.unwrap();
                } else {
                    set.get_ref().apply(&[SemOp::wait(1)]).unwrap();
                }
                samples.push(now_ns() - t);
            }
        });
        finish(child);
        samples
    }

    pub(super) fn run(mode: Mode) {
        let rounds = mode.pick(100, 3_000, 20_000);
        compare_with(
            "async ping-pong, POSIX named",
            rounds,
            |n| named(n, true),
            |n| named(n, false),
            BLOCKING,
            None,
        );
        compare_with(
            "async ping-pong, eventfd",
            rounds,
            |n| eventfd(n, true),
            |n| eventfd(n, false),
            BLOCKING,
            None,
        );
        compare_with(
            "async ping-pong, System V",
            mode.pick(50, 300, 2_000),
            |n| sysv(n, true),
            |n| sysv(n, false),
            BLOCKING,
            None,
        );
        // Uncontended: an async wait that finds its unit, and an async lock + unlock.
        let n = mode.pick(1_000, 20_000, 100_000);
        let reps = mode.pick(2, 5, 7);
        let rt = runtime();
        let sem = AsyncSemaphore::new(ipc_sem::SharedSemaphore::new(0).unwrap());
        let m = AsyncMutex::new(SharedMutex::new().unwrap());
        // ns per operation, best of `reps` batches of `n`, all inside one runtime.
        macro_rules! timed {
            ($n:expr, $op:expr) => {
                rt.block_on(async {
                    let mut best = f64::MAX;
                    for _ in 0..reps {
                        let t = std::time::Instant::now();
                        for _ in 0..$n {
                            $op;
                        }
                        best = best.min(t.elapsed().as_nanos() as f64 / $n as f64);
                    }
                    best
                })
            };
        }
        let mut f = [f64::MAX; 4];
        for _ in 0..2 {
            f[0] = f[0].min(timed!(n, {
                sem.post().unwrap();
                sem.wait().await.unwrap();
            }));
            f[1] = f[1].min(per_op(n, reps, || {
                sem.post().unwrap();
                sem.get_ref().wait().unwrap();
            }));
            f[2] = f[2].min(timed!(n / 10, drop(m.lock().await.unwrap())));
            f[3] = f[3].min(per_op(n / 10, reps, || {
                drop(m.get_ref().lock().unwrap());
            }));
        }
        for (case, ours, baseline) in [
            ("async uncontended post+wait, unnamed", f[0], f[1]),
            ("async uncontended lock+unlock, robust mutex", f[2], f[3]),
        ] {
            Row {
                group: GROUP,
                case,
                metric: "ns/op",
                unit: "ns",
                better: Better::Lower,
                ours,
                baseline,
                baseline_name: BLOCKING,
                target: None,
            }
            .emit();
        }
    }
}
