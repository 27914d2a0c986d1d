//! POSIX queues across real processes.

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use ipc_mq::{Access, Error, Key, MessageQueue, Notify, OwnerCheck, SysvQueue};
use ipc_testkit::bench::now_ns;
use ipc_testkit::{SplitMix64, Watchdog, child, fnv1a64, posix_name, role, test_path};

use crate::{INDEX_ENV, NAME_ENV, NameGuard, arg_index, arg_name, ready, spawn_ready};

const SENDERS: u64 = 8;
const PER_SENDER: u32 = 5_000;
const MSG_SIZE: usize = 64;

/// The header: `sender u32 | seq u32 | priority u32 | prev_sent u64`, then random bytes and
/// the fnv1a64 of all before: 28..=64 bytes. `prev_sent` is when the sender's previous message
/// was in the queue for sure (monotonic ns after its `mq_send` returned; 0 for the first).
const HEADER: usize = 20;

/// What a message says about itself.
#[derive(Debug, Clone, Copy)]
struct Meta {
    sender: u32,
    seq: u32,
    priority: u32,
    prev_sent: u64,
}

fn make_message(
    rng: &mut SplitMix64,
    sender: u32,
    seq: u32,
    priority: u32,
    prev_sent: u64,
) -> Vec<u8> {
    let len = rng.range(HEADER as u64 + 8, MSG_SIZE as u64) as usize;
    let mut m = vec![0; len];
    m[0..4].copy_from_slice(&sender.to_le_bytes());
    m[4..8].copy_from_slice(&seq.to_le_bytes());
    m[8..12].copy_from_slice(&priority.to_le_bytes());
    m[12..20].copy_from_slice(&prev_sent.to_le_bytes());
    rng.fill(&mut m[HEADER..len - 8]);
    let sum = fnv1a64(&m[..len - 8]);
    m[len - 8..].copy_from_slice(&sum.to_le_bytes());
    m
}

/// Checks a message's length and checksum and returns its header.
fn parse_message(m: &[u8]) -> Meta {
    assert!(
        m.len() >= HEADER + 8 && m.len() <= MSG_SIZE,
        "length {}",
        m.len()
    );
    let (body, sum) = m.split_at(m.len() - 8);
    assert_eq!(
        fnv1a64(body),
        u64::from_le_bytes(sum.try_into().unwrap()),
        "checksum"
    );
    let word = |i: usize| u32::from_le_bytes(m[i..i + 4].try_into().unwrap());
    Meta {
        sender: word(0),
        seq: word(4),
        priority: word(8),
        prev_sent: u64::from_le_bytes(m[12..20].try_into().unwrap()),
    }
}

fn senders(test: &str, name: &str, role: &str) -> Vec<ipc_testkit::Proc> {
    (0..SENDERS)
        .map(|i| {
            ipc_testkit::Proc::spawn(
                child(test, role)
                    .env(NAME_ENV, name)
                    .env(INDEX_ENV, i.to_string()),
            )
            .expect("spawn sender")
        })
        .collect()
}

/// Minimum over index ranges of a fixed slice, in O(1) per query (a sparse table).
struct RangeMin(Vec<Vec<u32>>);

impl RangeMin {
    fn new(v: &[u32]) -> RangeMin {
        let mut levels = vec![v.to_vec()];
        let mut width = 1;
        while 2 * width <= v.len() {
            let prev = levels.last().unwrap();
            let next = (0..=v.len() - 2 * width)
                .map(|i| prev[i].min(prev[i + width]))
                .collect();
            levels.push(next);
            width *= 2;
        }
        RangeMin(levels)
    }

    /// The minimum of `v[lo..hi]` (`lo < hi`).
    fn min(&self, lo: usize, hi: usize) -> u32 {
        let k = (hi - lo).ilog2() as usize;
        self.0[k][lo].min(self.0[k][hi - (1 << k)])
    }
}

/// How often (in receives) the receiver of the stress test lets a full backlog build up.
const STALL_EVERY: usize = 100;

/// Whether every thread of every process in `pids` is asleep (or the process is gone).
fn all_asleep(pids: &[u32]) -> bool {
    pids.iter().all(|pid| {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return true;
        };
        tasks.flatten().all(|t| {
            // `pid (comm) S ...`: the state follows the last `)`.
            std::fs::read_to_string(t.path().join("stat")).map_or(true, |st| {
                st.rsplit_once(')')
                    .is_some_and(|(_, rest)| !rest.trim_start().starts_with('R'))
            })
        })
    })
}

/// Slack for comparing monotonic timestamps taken on different CPUs.
const CLOCK_SLACK_NS: u64 = 20_000;

#[test]
fn eight_senders_five_thousand_messages_each_arrive_whole_and_exactly_once() {
    let _wd = Watchdog::new("8 x 5000 messages", Duration::from_secs(120));
    if role().as_deref() == Some("sender") {
        let q = MessageQueue::open(&arg_name(), Access::Send).unwrap();
        let me = arg_index() as u32;
        let mut rng = SplitMix64::new(0x5eed ^ u64::from(me));
        let mut prev_sent = 0;
        for seq in 0..PER_SENDER {
            let prio = rng.range(0, 31) as u32;
            q.send(&make_message(&mut rng, me, seq, prio, prev_sent), prio)
                .unwrap();
            prev_sent = now_ns();
        }
        return;
    }
    let name = posix_name("stress");
    let q = MessageQueue::create(&name, 10, MSG_SIZE as u64).unwrap();
    let test = test_path!(eight_senders_five_thousand_messages_each_arrive_whole_and_exactly_once);
    let kids = senders(&test, &name, "sender");
    let total = (SENDERS * u64::from(PER_SENDER)) as usize;
    // For every receive, in order: when the call began, and what it returned.
    let mut began = Vec::with_capacity(total);
    let mut got = Vec::with_capacity(total);
    // Where (sender, seq) was received: its index in `got`.
    let mut at = vec![vec![usize::MAX; PER_SENDER as usize]; SENDERS as usize];
    let pids: Vec<u32> = kids.iter().map(ipc_testkit::Proc::id).collect();
    let mut buf = [0u8; MSG_SIZE];
    for i in 0..total {
        // Now and then let a full backlog build up: wait until the queue is full and every
        // sender is asleep (blocked in mq_send, its previous message's time noted).
        if i % STALL_EVERY == 0 && total - i > 10 {
            // Bounded: a stall that times out only means fewer messages are checked below.
            let until = Instant::now() + Duration::from_millis(100);
            while (q.len().unwrap() < 10 || !all_asleep(&pids)) && Instant::now() < until {
                std::thread::yield_now();
            }
        }
        began.push(now_ns());
        let (n, prio) = q.receive(&mut buf).unwrap();
        let m = parse_message(&buf[..n]);
        assert_eq!(m.priority, prio, "priority carried in the message");
        assert!(u64::from(m.sender) < SENDERS && m.seq < PER_SENDER, "{m:?}");
        let slot = &mut at[m.sender as usize][m.seq as usize];
        assert_eq!(*slot, usize::MAX, "duplicate {}/{}", m.sender, m.seq);
        *slot = i;
        got.push(m);
    }
    assert!(
        at.iter().flatten().all(|&i| i != usize::MAX),
        "lost messages"
    );
    for k in kids {
        k.expect_success(Duration::from_secs(60));
    }
    assert_eq!(q.len().unwrap(), 0, "nothing left over");

    // Within one sender and one priority, messages keep their order (FIFO per priority).
    let mut last: HashMap<(u32, u32), u32> = HashMap::new();
    for m in &got {
        if let Some(prev) = last.insert((m.sender, m.priority), m.seq) {
            assert!(prev < m.seq, "{m:?} after seq {prev}");
        }
    }

    // Priority order under a backlog. Message `m` (received at index j) was surely in the queue
    // from `sent` on, the time its sender's next message carries. Every receive that began
    // after `sent` and before j found `m` waiting, so the kernel had to hand out something at
    // least as urgent: the priorities received while `m` waited never drop below m's.
    let prios: Vec<u32> = got.iter().map(|m| m.priority).collect();
    let mins = RangeMin::new(&prios);
    let mut waited = 0; // messages that stayed queued through at least one other receive
    let mut overtaken = 0; // ... while only more urgent ones left
    for next in &got {
        if next.seq == 0 {
            continue;
        }
        let j = at[next.sender as usize][next.seq as usize - 1];
        let m = got[j];
        let sent = next.prev_sent + CLOCK_SLACK_NS;
        let first = began.partition_point(|&t| t <= sent);
        if first >= j {
            continue;
        }
        waited += 1;
        let least = mins.min(first, j);
        if least > m.priority {
            overtaken += 1;
        }
        assert!(
            least >= m.priority,
            "{m:?} (received at {j}) was queued by receive {first}, yet a less urgent \
             priority-{least} message was handed out in between"
        );
    }
    // The check above only means something if the queue really held a backlog. (Typically
    // several thousand messages wait; a loaded machine gives fewer, as stalls time out.)
    assert!(
        waited >= 500 && overtaken >= 50,
        "too little backlog: {waited} of {total} messages waited, {overtaken} were overtaken"
    );
}

#[test]
fn a_backlog_leaves_in_priority_order_oldest_first_within_a_priority() {
    let _wd = Watchdog::new("backlog order", Duration::from_secs(60));
    if role().as_deref() == Some("burst") {
        // Eight processes put 10 messages (the queue's capacity) in: 2 from the first two,
        // 1 from the rest.
        let q = MessageQueue::open(&arg_name(), Access::Send).unwrap();
        let me = arg_index() as u32;
        let mut rng = SplitMix64::new(0xb0b ^ u64::from(me));
        for seq in 0..if me < 2 { 2 } else { 1 } {
            let prio = rng.range(0, 4) as u32;
            q.try_send(&make_message(&mut rng, me, seq, prio, 0), prio)
                .unwrap();
        }
        return;
    }
    let test = test_path!(a_backlog_leaves_in_priority_order_oldest_first_within_a_priority);
    for round in 0..3 {
        let name = posix_name("backlog");
        let q = MessageQueue::create(&name, 10, MSG_SIZE as u64).unwrap();
        for k in senders(&test, &name, "burst") {
            k.expect_success(Duration::from_secs(30));
        }
        assert_eq!(q.len().unwrap(), 10, "round {round}: the queue is full");
        let mut prev_prio = u32::MAX;
        let mut last: HashMap<(u32, u32), u32> = HashMap::new();
        let mut got = 0;
        while let Ok((m, prio)) = q.try_receive_vec() {
            got += 1;
            assert!(prio <= prev_prio, "round {round}: {prio} after {prev_prio}");
            prev_prio = prio;
            let Meta {
                sender,
                seq,
                priority,
                ..
            } = parse_message(&m);
            assert_eq!(priority, prio);
            if let Some(prev) = last.insert((sender, prio), seq) {
                assert!(prev < seq);
            }
        }
        assert_eq!(got, 10, "round {round}: every message once");
    }
}

#[test]
fn full_queue_try_send_would_block_and_send_timeout_times_out_in_time() {
    let name = posix_name("full");
    let q = MessageQueue::create(&name, 2, 16).unwrap();
    q.send(b"a", 0).unwrap();
    q.send_timeout(b"b", 0, Duration::MAX).unwrap();
    assert!(matches!(q.try_send(b"c", 0), Err(Error::WouldBlock)));
    assert!(matches!(
        q.send_timeout(b"c", 0, Duration::ZERO),
        Err(Error::TimedOut)
    ));
    let t = Instant::now();
    assert!(matches!(
        q.send_timeout(b"c", 0, Duration::from_millis(100)),
        Err(Error::TimedOut)
    ));
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(100) && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert_eq!(q.len().unwrap(), 2);
}

#[test]
fn empty_queue_try_receive_would_block_and_receive_timeout_times_out_in_time() {
    let name = posix_name("empty");
    let q = MessageQueue::create(&name, 2, 16).unwrap();
    let mut buf = [0; 16];
    assert!(matches!(q.try_receive(&mut buf), Err(Error::WouldBlock)));
    assert!(matches!(q.try_receive_vec(), Err(Error::WouldBlock)));
    assert!(matches!(
        q.receive_timeout(&mut buf, Duration::ZERO),
        Err(Error::TimedOut)
    ));
    let t = Instant::now();
    assert!(matches!(
        q.receive_vec_timeout(Duration::from_millis(100)),
        Err(Error::TimedOut)
    ));
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(100) && took < Duration::from_secs(2),
        "{took:?}"
    );
}

#[test]
fn receive_timeout_max_waits_for_a_message_from_another_process() {
    let _wd = Watchdog::new("receive_timeout(MAX)", Duration::from_secs(30));
    if role().as_deref() == Some("late sender") {
        let q = MessageQueue::open(&arg_name(), Access::Send).unwrap();
        q.send(b"at last", 7).unwrap();
        return;
    }
    let name = posix_name("max");
    let q = MessageQueue::create(&name, 2, 16).unwrap();
    let test = test_path!(receive_timeout_max_waits_for_a_message_from_another_process);
    let kid = ipc_testkit::Proc::spawn(child(&test, "late sender").env(NAME_ENV, &name)).unwrap();
    let mut buf = [0; 16];
    let (n, prio) = q.receive_timeout(&mut buf, Duration::MAX).unwrap();
    assert_eq!((&buf[..n], prio), (&b"at last"[..], 7));
    kid.expect_success(Duration::from_secs(10));
}

#[test]
fn nonblocking_toggle_turns_waits_into_would_block() {
    let name = posix_name("nb");
    let q = MessageQueue::create(&name, 1, 8).unwrap();
    assert!(!q.attributes().unwrap().nonblocking);
    q.set_nonblocking(true).unwrap();
    assert!(q.attributes().unwrap().nonblocking);
    assert!(matches!(q.receive_vec(), Err(Error::WouldBlock)));
    q.send(b"x", 0).unwrap();
    assert!(matches!(q.send(b"y", 0), Err(Error::WouldBlock)));
    q.set_nonblocking(false).unwrap();
    assert!(!q.attributes().unwrap().nonblocking);
    assert_eq!(q.receive_vec().unwrap(), (b"x".to_vec(), 0));
}

#[test]
fn a_65_byte_send_to_a_64_byte_queue_is_rejected_and_the_queue_is_unchanged() {
    let name = posix_name("big");
    let q = MessageQueue::create(&name, 4, 64).unwrap();
    q.send(b"before", 1).unwrap();
    match q.send(&[7; 65], 5) {
        Err(Error::MessageTooLarge { len: 65, max: 64 }) => {}
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        q.try_send(&[7; 65], 5),
        Err(Error::MessageTooLarge { .. })
    ));
    assert_eq!(q.len().unwrap(), 1);
    q.send(&[9; 64], 0).unwrap();
    q.send(b"", 0).unwrap();
    assert_eq!(q.receive_vec().unwrap(), (b"before".to_vec(), 1));
    assert_eq!(q.receive_vec().unwrap(), (vec![9; 64], 0));
    assert_eq!(
        q.receive_vec().unwrap(),
        (Vec::new(), 0),
        "zero-length message"
    );
}

#[test]
fn a_receive_buffer_smaller_than_the_message_size_says_the_size_needed() {
    let name = posix_name("small");
    let q = MessageQueue::create(&name, 4, 64).unwrap();
    q.send(b"tiny", 0).unwrap();
    let mut buf = [0; 63];
    match q.receive(&mut buf) {
        Err(
            e @ Error::BufferTooSmall {
                len: 63,
                needed: Some(64),
            },
        ) => {
            assert!(e.to_string().contains("64"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(q.len().unwrap(), 1, "the message stays");
    assert!(matches!(
        q.send(b"x", ipc_mq::MAX_PRIORITY + 1),
        Err(Error::InvalidPriority { .. })
    ));
}

/// The errno the seccomp filter of [`bad_names_are_invalid_before_any_system_call`] makes the
/// queue system calls fail with: nothing else in this crate produces it.
const FILTERED: i32 = libc::ENOTRECOVERABLE;

#[test]
fn bad_names_are_invalid_before_any_system_call() {
    let _wd = Watchdog::new("bad names", Duration::from_secs(30));
    if role().as_deref() == Some("filtered") {
        // From here on mq_open, mq_unlink, msgget, openat and stat fail with FILTERED in this
        // thread: a bad name that got as far as reading the limits or reaching the kernel
        // would come back as Io(FILTERED), not InvalidName.
        forbid_queue_syscalls();
        let is_filtered =
            |e: &Error| matches!(e, Error::Io(io) if io.raw_os_error() == Some(FILTERED));
        // The filter works: a good name does reach the kernel.
        let good = posix_name("good");
        let r = MessageQueue::create(&good, 1, 8);
        assert!(r.as_ref().is_err_and(is_filtered), "{r:?}");
        let r = MessageQueue::open(&good, Access::Both);
        assert!(r.as_ref().is_err_and(is_filtered), "{r:?}");
        let r = ipc_mq::unlink(&good);
        assert!(r.as_ref().is_err_and(is_filtered), "{r:?}");
        let r = SysvQueue::open(Key::new(ipc_testkit::sysv_key()));
        assert!(r.as_ref().is_err_and(is_filtered), "{r:?}");
        let r = Key::from_path(std::path::Path::new("/tmp"), 1);
        assert!(r.as_ref().is_err_and(is_filtered), "{r:?}");

        let long = format!("/{}", "x".repeat(ipc_mq::NAME_MAX + 1));
        for bad in [
            "",
            "/",
            "noslash",
            "/a/b",
            "//x",
            long.as_str(),
            "/nul\0x",
            "/.",
            "/..",
        ] {
            let r = MessageQueue::create(bad, 1, 8);
            assert!(
                matches!(r, Err(Error::InvalidName { .. })),
                "create {bad:?}: {r:?}"
            );
            let r = MessageQueue::open(bad, Access::Both);
            assert!(
                matches!(r, Err(Error::InvalidName { .. })),
                "open {bad:?}: {r:?}"
            );
            let r = ipc_mq::unlink(bad);
            assert!(
                matches!(r, Err(Error::InvalidName { .. })),
                "unlink {bad:?}: {r:?}"
            );
            let r = ipc_mq::remove_stale(bad);
            assert!(
                matches!(r, Err(Error::InvalidName { .. })),
                "remove_stale {bad:?}: {r:?}"
            );
            let r = MessageQueue::open_or_create(bad, 1, 8);
            assert!(
                matches!(r, Err(Error::InvalidName { .. })),
                "open_or_create {bad:?}: {r:?}"
            );
            let r = MessageQueue::options().replace_stale().create(bad);
            assert!(
                matches!(r, Err(Error::InvalidName { .. })),
                "create(replace_stale) {bad:?}: {r:?}"
            );
            assert!(!ipc_mq::is_valid_name(bad), "{bad:?}");
        }
        // ENAMETOOLONG has one meaning everywhere: the name (here: a path) is invalid, found
        // before the call.
        let long = format!("/{}", "x".repeat(ipc_mq::NAME_MAX + 1));
        match ipc_mq::remove_stale(&long) {
            Err(Error::InvalidName { name, reason }) => {
                assert_eq!(name, long);
                assert!(reason.contains("255"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        for path in [
            format!("/tmp/{}", "y".repeat(ipc_mq::NAME_MAX + 1)),
            format!("/tmp{}", "/z".repeat(2100)),
        ] {
            let r = Key::from_path(std::path::Path::new(&path), 1);
            assert!(
                matches!(&r, Err(Error::InvalidName { name, .. }) if *name == path),
                "{r:?}"
            );
        }
        // Modes outside 0o777: refused before any call, however good the name.
        let r = MessageQueue::options().mode(0o1600).create(&good);
        assert!(
            matches!(r, Err(Error::InvalidMode { mode: 0o1600 })),
            "{r:?}"
        );
        let r = SysvQueue::options()
            .mode(0o1600)
            .create(Key::new(ipc_testkit::sysv_key()));
        assert!(
            matches!(r, Err(Error::InvalidMode { mode: 0o1600 })),
            "{r:?}"
        );
        // Opening "the" IPC_PRIVATE queue would create a new one: refused before msgget.
        let r = SysvQueue::open(Key::PRIVATE);
        assert!(matches!(r, Err(Error::NotFound { .. })), "{r:?}");
        return;
    }
    let test = test_path!(bad_names_are_invalid_before_any_system_call);
    ipc_testkit::Proc::spawn(&mut child(&test, "filtered"))
        .unwrap()
        .expect_success(Duration::from_secs(20));
    let absent = posix_name("absent");
    assert!(matches!(
        MessageQueue::open(&absent, Access::Both),
        Err(Error::NotFound { .. })
    ));
}

/// Installs a seccomp filter on the calling thread that fails `mq_open`, `mq_unlink`,
/// `msgget`, `openat` (how `create` reads the limits in /proc) and `newfstatat`/`statx` (how
/// `ftok` looks at its path) with [`FILTERED`] and allows everything else. Irreversible: only in a child.
#[allow(unsafe_code)]
fn forbid_queue_syscalls() {
    #[cfg(target_arch = "x86_64")]
    const AUDIT_ARCH: u32 = 0xC000_003E; // AUDIT_ARCH_X86_64
    #[cfg(target_arch = "aarch64")]
    const AUDIT_ARCH: u32 = 0xC000_00B7; // AUDIT_ARCH_AARCH64
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    const AUDIT_ARCH: u32 =
        { panic!("add this target's AUDIT_ARCH_* value (linux/audit.h) to forbid_queue_syscalls") };
    const NR: u32 = 0; // offsetof(struct seccomp_data, nr)
    const ARCH: u32 = 4; // offsetof(struct seccomp_data, arch)
    let stmt = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let jeq = |k: libc::c_long, jt: u8, jf: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k: k as u32,
    };
    let load = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    let ret = libc::BPF_RET | libc::BPF_K;
    let mut filter = [
        stmt(load, ARCH),
        jeq(libc::c_long::from(AUDIT_ARCH), 0, 7), // another ABI: allow
        stmt(load, NR),
        jeq(libc::SYS_mq_open, 6, 0),
        jeq(libc::SYS_mq_unlink, 5, 0),
        jeq(libc::SYS_msgget, 4, 0),
        jeq(libc::SYS_openat, 3, 0),
        jeq(libc::SYS_newfstatat, 2, 0),
        jeq(libc::SYS_statx, 1, 0),
        stmt(ret, libc::SECCOMP_RET_ALLOW),
        stmt(ret, libc::SECCOMP_RET_ERRNO | FILTERED as u32),
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: plain integer arguments; PR_SET_NO_NEW_PRIVS only restricts this process.
    let r = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    assert_eq!(
        r,
        0,
        "PR_SET_NO_NEW_PRIVS: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: `prog` points to `filter`, both valid for the call (the kernel copies them).
    let r = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &raw const prog,
        )
    };
    assert_eq!(r, 0, "PR_SET_SECCOMP: {}", std::io::Error::last_os_error());
}

#[test]
fn create_is_exclusive_and_mode_is_0600_whatever_the_umask() {
    let _wd = Watchdog::new("umask child", Duration::from_secs(30));
    if role().as_deref() == Some("umask") {
        rustix::process::umask(rustix::fs::Mode::empty());
        let q = MessageQueue::create(&arg_name(), 1, 8).unwrap();
        let st = rustix::fs::fstat(&q).unwrap();
        assert_eq!(st.st_mode & 0o777, 0o600);
        let q2 = MessageQueue::options()
            .mode(0o640)
            .create(&posix_name("mode"))
            .unwrap();
        assert_eq!(rustix::fs::fstat(&q2).unwrap().st_mode & 0o777, 0o640);
        return;
    }
    let name = posix_name("excl");
    let q = MessageQueue::create(&name, 1, 8).unwrap();
    assert!(matches!(
        MessageQueue::create(&name, 1, 8),
        Err(Error::AlreadyExists { .. })
    ));
    drop(q);
    let test = test_path!(create_is_exclusive_and_mode_is_0600_whatever_the_umask);
    let name = posix_name("umask");
    ipc_testkit::Proc::spawn(child(&test, "umask").env(NAME_ENV, &name))
        .unwrap()
        .expect_success(Duration::from_secs(20));
    // The child's owner unlinked its queue.
    assert!(matches!(
        MessageQueue::open(&name, Access::Both),
        Err(Error::NotFound { .. })
    ));
}

#[test]
fn another_user_is_denied_a_0600_queue_and_open_checks_the_owner() {
    let _wd = Watchdog::new("uid child", Duration::from_secs(30));
    if role().as_deref() == Some("nobody") {
        let (private, shared) = arg_name()
            .split_once(',')
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .unwrap();
        nix::unistd::setgid(nix::unistd::Gid::from_raw(65534)).unwrap();
        nix::unistd::setuid(nix::unistd::Uid::from_raw(65534)).unwrap();
        let denied = MessageQueue::options()
            .owner_check(OwnerCheck::AnyUid)
            .open(&private);
        assert!(
            matches!(denied, Err(Error::PermissionDenied { .. })),
            "{denied:?}"
        );
        let not_ours = MessageQueue::open(&shared, Access::Send);
        assert!(
            matches!(not_ours, Err(Error::WrongOwner { found: 0, .. })),
            "{not_ours:?}"
        );
        let q = MessageQueue::options()
            .access(Access::Send)
            .owner_check(OwnerCheck::AnyUid)
            .open(&shared)
            .unwrap();
        q.send(b"from nobody", 0).unwrap();
        return;
    }
    let private = posix_name("priv");
    let shared = posix_name("shared");
    let _p = MessageQueue::create(&private, 1, 16).unwrap();
    let s = MessageQueue::options()
        .max_messages(1)
        .message_size(16)
        .mode(0o622)
        .create(&shared)
        .unwrap();
    let test = test_path!(another_user_is_denied_a_0600_queue_and_open_checks_the_owner);
    ipc_testkit::Proc::spawn(child(&test, "nobody").env(NAME_ENV, format!("{private},{shared}")))
        .unwrap()
        .expect_success(Duration::from_secs(20));
    assert_eq!(s.receive_vec().unwrap().0, b"from nobody");
}

#[test]
fn a_creator_killed_leaves_its_queue_and_messages_until_unlinked() {
    let _wd = Watchdog::new("killed creator", Duration::from_secs(30));
    if role().as_deref() == Some("creator") {
        let q = MessageQueue::create(&arg_name(), 4, 16).unwrap();
        for i in 0..3u8 {
            q.send(&[i; 3], u32::from(i)).unwrap();
        }
        ready("ready");
        // Wait to be killed: stdin is never written to.
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        return;
    }
    let name = posix_name("killed");
    let guard = NameGuard(name.clone());
    let test = test_path!(a_creator_killed_leaves_its_queue_and_messages_until_unlinked);
    let mut cmd = child(&test, "creator");
    cmd.env(NAME_ENV, &name).stdin(std::process::Stdio::piped());
    let (mut kid, line) = spawn_ready(&mut cmd);
    assert_eq!(line, "ready");
    kid.kill().unwrap();
    let status = kid.wait_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL),
        "{status}"
    );

    let opener = MessageQueue::open(&name, Access::Receive).unwrap();
    assert!(!opener.is_owner());
    assert_eq!(opener.len().unwrap(), 3);
    drop(opener); // an opener's drop removes nothing
    let q = MessageQueue::open(&name, Access::Receive).unwrap();
    let got: Vec<_> = (0..3).map(|_| q.receive_vec().unwrap()).collect();
    assert_eq!(got, vec![(vec![2; 3], 2), (vec![1; 3], 1), (vec![0; 3], 0)]);
    ipc_mq::unlink(&name).unwrap();
    assert!(matches!(
        MessageQueue::open(&name, Access::Both),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(ipc_mq::unlink(&name), Err(Error::NotFound { .. })));
    drop(guard);
}

#[test]
fn an_owner_that_persists_leaves_the_queue() {
    let name = posix_name("persist");
    let _guard = NameGuard(name.clone());
    let mut q = MessageQueue::create(&name, 1, 8).unwrap();
    assert!(q.is_owner());
    q.persist();
    assert!(q.is_owner(), "the owner until dropped");
    drop(q);
    let fd: std::os::fd::OwnedFd = MessageQueue::open(&name, Access::Both).unwrap().into();
    let q = MessageQueue::try_from(fd).unwrap();
    assert_eq!(q.message_size(), 8);
}

#[test]
fn notify_signals_an_arrival_in_the_empty_queue_once_per_registration() {
    let _wd = Watchdog::new("notify", Duration::from_secs(30));
    if role().as_deref() == Some("notified") {
        notified_child();
        return;
    }
    let test = test_path!(notify_signals_an_arrival_in_the_empty_queue_once_per_registration);
    let name = posix_name("notify");
    let _guard = NameGuard(name.clone());
    ipc_testkit::Proc::spawn(child(&test, "notified").env(NAME_ENV, &name))
        .unwrap()
        .expect_success(Duration::from_secs(20));
}

static SIGNALS: AtomicU32 = AtomicU32::new(0);
static SI_CODE: AtomicI32 = AtomicI32::new(0);
static SIVAL_INT: AtomicI32 = AtomicI32::new(-1);

/// `si_code` of a signal sent by `mq_notify` (linux/asm-generic/siginfo.h).
const SI_MESGQ: i32 = -3;

#[allow(unsafe_code)]
extern "C" fn note_signal(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo_t to an SA_SIGINFO handler.
    let info = unsafe { &*info };
    // SAFETY: for SI_MESGQ the kernel fills si_value (read as a union of int and pointer).
    let value = unsafe { info.si_value() };
    // `sival_int` is the union's first four bytes, whatever the byte order.
    let bytes: [u8; size_of::<libc::sigval>()] =
        // SAFETY: `sigval` is plain data of that size.
        unsafe { std::mem::transmute(value) };
    let int = i32::from_ne_bytes(bytes[..4].try_into().unwrap());
    SI_CODE.store(info.si_code, Ordering::SeqCst);
    SIVAL_INT.store(int, Ordering::SeqCst);
    SIGNALS.fetch_add(1, Ordering::SeqCst);
}

/// The child of the notify test: installs a SIGUSR1 handler (process-wide, so only here),
/// registers, and sees exactly one signal, from the queue, for one arrival.
#[allow(unsafe_code)]
fn notified_child() {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let act = SigAction::new(
        SigHandler::SigAction(note_signal),
        SaFlags::SA_RESTART | SaFlags::SA_SIGINFO,
        SigSet::empty(),
    );
    // SAFETY: the handler only reads its siginfo and stores atomics (async-signal-safe); this
    // process is a test child that exits after this function.
    unsafe { sigaction(Signal::SIGUSR1, &act) }.unwrap();
    let q = MessageQueue::create(&arg_name(), 2, 8).unwrap();
    // Not signals, or ones glibc keeps for itself: refused before the call.
    for bad in [0, -1, 32, 33, libc::SIGRTMAX() + 1] {
        let r = q.notify(Notify::Signal(bad));
        assert!(
            matches!(r, Err(Error::InvalidSignal { signal }) if signal == bad),
            "{r:?}"
        );
    }
    q.notify(Notify::Signal(libc::SIGUSR1)).unwrap();
    let other = MessageQueue::open(&arg_name(), Access::Send).unwrap();
    assert!(matches!(
        other.notify(Notify::None),
        Err(Error::NotifyBusy { .. })
    ));
    assert!(matches!(
        q.notify(Notify::None),
        Err(Error::NotifyBusy { .. })
    ));
    other.send(b"wake", 0).unwrap();
    // The kernel queues the signal during mq_send; wait for a thread to run the handler.
    while SIGNALS.load(Ordering::SeqCst) == 0 {
        std::thread::yield_now();
    }
    assert_eq!(SI_CODE.load(Ordering::SeqCst), SI_MESGQ);
    assert_eq!(
        SIVAL_INT.load(Ordering::SeqCst),
        q.as_raw_fd(),
        "si_value names the queue"
    );
    // The registration is used up: a second arrival signals nothing, and the slot is free.
    other.send(b"again", 0).unwrap();
    other.notify(Notify::None).unwrap();
    other.unnotify().unwrap();
    assert_eq!(q.receive_vec().unwrap().0, b"wake");
    assert_eq!(q.receive_vec().unwrap().0, b"again");
    assert_eq!(SIGNALS.load(Ordering::SeqCst), 1);
}

#[test]
fn closing_any_descriptor_of_the_queue_ends_this_process_s_notify_registration() {
    let name = posix_name("notify-close");
    let q = MessageQueue::create(&name, 2, 8).unwrap();
    q.notify(Notify::None).unwrap();
    assert!(matches!(
        q.notify(Notify::None),
        Err(Error::NotifyBusy { .. })
    ));
    // Another descriptor of the queue, opened and closed by this process: Linux drops the
    // registration (as the docs of `notify` say).
    drop(MessageQueue::open(&name, Access::Send).unwrap());
    q.notify(Notify::None).unwrap();
    q.unnotify().unwrap();
}

static INTERRUPTS: AtomicU32 = AtomicU32::new(0);

extern "C" fn count_interrupt(_: libc::c_int) {
    INTERRUPTS.fetch_add(1, Ordering::SeqCst);
}

#[test]
fn interrupted_waits_resume_against_the_same_deadline() {
    let _wd = Watchdog::new("EINTR", Duration::from_secs(30));
    if role().as_deref() == Some("interrupted") {
        interrupted_child();
        return;
    }
    let test = test_path!(interrupted_waits_resume_against_the_same_deadline);
    ipc_testkit::Proc::spawn(&mut child(&test, "interrupted"))
        .unwrap()
        .expect_success(Duration::from_secs(20));
}

/// Installs a SIGUSR2 handler *without* SA_RESTART (so blocked calls fail with EINTR), and
/// has a helper thread signal this thread every few milliseconds while it waits.
#[allow(unsafe_code)]
fn interrupted_child() {
    use nix::sys::pthread::{pthread_kill, pthread_self};
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    let act = SigAction::new(
        SigHandler::Handler(count_interrupt),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the handler only increments an atomic (async-signal-safe); this is a child
    // process that exits after the test.
    unsafe { sigaction(Signal::SIGUSR2, &act) }.unwrap();
    let name = posix_name("eintr");
    let q = MessageQueue::create(&name, 1, 8).unwrap();
    let me = pthread_self();
    let stop = Arc::new(AtomicBool::new(false));
    let pester = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let _ = pthread_kill(me, Signal::SIGUSR2);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let mut buf = [0; 8];
    let t = Instant::now();
    let r = q.receive_timeout(&mut buf, Duration::from_millis(300));
    let took = t.elapsed();
    assert!(matches!(r, Err(Error::TimedOut)), "{r:?}");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    q.send(b"full", 0).unwrap();
    let t = Instant::now();
    let r = q.send_timeout(b"more", 0, Duration::from_millis(200));
    assert!(matches!(r, Err(Error::TimedOut)), "{r:?}");
    assert!(t.elapsed() >= Duration::from_millis(200));
    stop.store(true, Ordering::SeqCst);
    pester.join().unwrap();
    assert!(
        INTERRUPTS.load(Ordering::SeqCst) > 10,
        "the waits were interrupted"
    );
}
