//! Forked children: an anonymous region is shared with them, and what they may do there (the
//! "After fork" sections of the docs) they do, in a child forked from a re-run test process
//! while other threads are busy: use regions, ask `is_owner`, drop every kind of handle. Their
//! drops remove nothing and release no owner lock; a child that keeps an inherited owner's
//! descriptor keeps the owner alive.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use ipc_shm::{Anon, Error, Memfd, Ring, Seals, Shm, Size, SysvShm};
use ipc_testkit::{Proc, Watchdog, child, posix_name, role, test_path};

use crate::dev_shm;

const WORDS: usize = 4096;
const DONE_AT: usize = WORDS * 8;

fn word(i: usize) -> u64 {
    (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5eed
}

fn sysv_fresh() -> SysvShm {
    // A workspace key, not IPC_PRIVATE: should this process be killed, `cargo xtask clean`
    // finds the segment by its key.
    loop {
        match SysvShm::create(ipc_testkit::sysv_key(), 4096) {
            Err(Error::AlreadyExists { .. }) => continue,
            r => break r.unwrap(),
        }
    }
}

#[allow(unsafe_code)]
fn fork() -> i32 {
    // SAFETY: the child makes only async-signal-safe calls (see each caller) and ends with
    // `_exit`; it never returns into the caller's frames.
    unsafe { libc::fork() }
}

#[allow(unsafe_code)]
fn exit_child(code: i32) -> ! {
    // SAFETY: `_exit` ends the child without running the parent's destructors or handlers.
    unsafe { libc::_exit(code) }
}

fn reap(pid: i32) -> i32 {
    let pid = rustix::process::Pid::from_raw(pid).unwrap();
    let (_, status) = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty())
        .unwrap()
        .unwrap();
    status.exit_status().unwrap_or(-1)
}

/// The role process: several threads busy allocating and locking while it forks. The child
/// keeps to what the docs allow there: plain stores and atomics through regions, `is_owner`
/// (`getpid`), and the drops of every handle (`munmap`, `shmdt`, `close`, freeing a `String`,
/// which glibc makes safe in a forked child), then `_exit`.
fn fork_role() {
    let busy = AtomicBool::new(true);
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                let m = std::sync::Mutex::new(Vec::<u8>::new());
                while busy.load(Ordering::Relaxed) {
                    let mut g = m.lock().unwrap();
                    g.push(1);
                    if g.len() > 4096 {
                        *g = Vec::with_capacity(17);
                    }
                }
            });
        }
        fork_while_busy();
        busy.store(false, Ordering::Relaxed);
    });
}

fn fork_while_busy() {
    let anon = Anon::new((DONE_AT + 8) as u64).unwrap();
    let name = posix_name("fork");
    let shm = Shm::create(&name, 4096).unwrap();
    let sysv = sysv_fresh();
    let id = sysv.id();
    let mut memfd = Memfd::create("fork", 4096).unwrap();
    memfd.write_bytes(0, b"memfd").unwrap();
    memfd.seal(Seals::SIZE | Seals::WRITE).unwrap();
    let ring_seg = Anon::new(Ring::segment_size(4096).unwrap()).unwrap();
    let mut w = Ring::create(&ring_seg).unwrap().into_writer().unwrap();
    let mut r = Ring::open(&ring_seg).unwrap().into_reader().unwrap();

    let pid = fork();
    if pid == 0 {
        let mut ok = true;
        for i in 0..WORDS {
            ok &= anon.write::<u64>(i * 8, &word(i)).is_ok();
        }
        ok &= shm.write::<u64>(0, &7).is_ok();
        ok &= sysv.write::<u64>(0, &8).is_ok();
        ok &= memfd
            .sealed_bytes()
            .is_some_and(|b| b.starts_with(b"memfd"));
        ok &= !shm.is_owner() && !sysv.is_owner();
        if let Ok(done) = anon.atomic::<AtomicU64>(DONE_AT) {
            done.store(WORDS as u64, Ordering::Release);
        }
        drop(w);
        drop(r);
        drop(shm);
        drop(sysv);
        drop(memfd);
        drop(ring_seg);
        exit_child(i32::from(!ok));
    }
    assert!(pid > 0, "fork failed");
    assert_eq!(reap(pid), 0, "the child's checks");

    // The child's stores are visible in the parent's mapping of the same pages.
    let done = anon.atomic::<AtomicU64>(DONE_AT).unwrap();
    assert_eq!(done.load(Ordering::Acquire), WORDS as u64);
    let got = anon.read_vec::<u64>(0, WORDS).unwrap();
    assert!(got.iter().enumerate().all(|(i, &w)| w == word(i)));
    assert_eq!(shm.read::<u64>(0).unwrap(), 7);
    assert_eq!(sysv.read::<u64>(0).unwrap(), 8);

    // The child's drops removed nothing, closed no ring end, released no owner lock.
    assert!(shm.is_owner() && sysv.is_owner());
    assert!(dev_shm(&name).exists(), "a forked child unlinked the name");
    assert!(matches!(
        ipc_shm::remove_stale(&name),
        Err(Error::OwnerAlive { .. })
    ));
    let key = sysv.key();
    assert!(matches!(
        ipc_shm::sysv::remove_stale(key),
        Err(Error::OwnerAlive { .. })
    ));
    drop(SysvShm::attach(id, 4096).expect("a forked child removed the segment"));
    w.try_send(b"still open").unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(r.try_recv(&mut buf).unwrap(), 10);
    assert!(matches!(
        Ring::open(&ring_seg).unwrap().into_writer(),
        Err(Error::RoleTaken)
    ));
    drop(shm);
    drop(sysv);
    assert!(!dev_shm(&name).exists());
    assert!(SysvShm::attach(id, Size::AtMost(4096)).is_err());

    // A child holding the inherited owner's descriptor keeps the owner alive, even once the
    // parent's handle is gone (kept); when the child exits, the segment is stale.
    let name = posix_name("forkhold");
    let mut owner = Shm::create(&name, 4096).unwrap();
    let (rd, wr) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
    let pid = fork();
    if pid == 0 {
        drop(wr);
        let mut b = [0u8; 1];
        let _ = rustix::io::read(&rd, &mut b); // until the parent closes its end
        exit_child(0);
    }
    assert!(pid > 0, "fork failed");
    drop(rd);
    owner.persist();
    drop(owner);
    assert!(dev_shm(&name).exists());
    assert!(
        matches!(ipc_shm::remove_stale(&name), Err(Error::OwnerAlive { .. })),
        "the child holds the owner's descriptor"
    );
    drop::<OwnedFd>(wr);
    assert_eq!(reap(pid), 0);
    ipc_shm::remove_stale(&name).unwrap();
    assert!(!dev_shm(&name).exists());
}

#[test]
fn forked_children_share_memory_and_their_drops_remove_nothing() {
    if role().as_deref() == Some("fork") {
        return fork_role();
    }
    let _wd = Watchdog::new("fork", Duration::from_secs(60));
    Proc::spawn(&mut child(
        &test_path!(forked_children_share_memory_and_their_drops_remove_nothing),
        "fork",
    ))
    .unwrap()
    .expect_success(Duration::from_secs(50));
}
