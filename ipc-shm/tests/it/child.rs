//! Handing a memfd and a named segment's descriptor to a spawned child at chosen numbers:
//! the child maps them and checks the data; no other descriptor reaches it, not even in a
//! child spawned concurrently by another thread.

use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

use ipc_shm::{Access, ChildFds, Error, Memfd, Seals, Shm, Size};
use ipc_testkit::{Proc, SplitMix64, Watchdog, child, fnv1a64, posix_name, role, test_path};

use crate::open_fds;

const MEMFD_AT: i32 = 7;
const SHM_AT: i32 = 9;

/// The open descriptors that refer to shared memory (a memfd or a file in /dev/shm).
fn shm_fds() -> Vec<i32> {
    open_fds()
        .into_iter()
        .filter(|fd| {
            std::fs::read_link(format!("/proc/self/fd/{fd}")).is_ok_and(|t| {
                let t = t.to_string_lossy();
                t.starts_with("/memfd:") || t.starts_with("/dev/shm/")
            })
        })
        .collect()
}

fn receiver() {
    assert_eq!(shm_fds(), vec![MEMFD_AT, SHM_AT], "exactly what was given");
    let want_m: u64 = std::env::var("SUM_M").unwrap().parse().unwrap();
    let want_s: u64 = std::env::var("SUM_S").unwrap().parse().unwrap();
    let m = Memfd::from_inherited(MEMFD_AT, Seals::SIZE | Seals::WRITE, 1 << 16).unwrap();
    assert_eq!(fnv1a64(m.sealed_bytes().unwrap()), want_m);
    let s = Shm::from_inherited(SHM_AT, Size::AtMost(1 << 20)).unwrap();
    assert!(!s.is_writable(), "handed over read-only");
    assert_eq!(s.name(), format!("fd {SHM_AT}"));
    let mut buf = vec![0; s.len()];
    s.read_bytes(0, &mut buf).unwrap();
    assert_eq!(fnv1a64(&buf), want_s);
    // Claimed once only; the standard streams and closed numbers are not claimable.
    for (fd, what) in [(MEMFD_AT, "claimed twice"), (1, "stdout"), (42, "not open")] {
        let r = Memfd::from_inherited(fd, Seals::NONE, Size::AtMost(1 << 20));
        assert!(
            matches!(r, Err(Error::InvalidDescriptor { fd: f, .. }) if f == fd),
            "{what}: {r:?}"
        );
    }
    // The claimed descriptors are close-on-exec again: not passed on.
    let flags = rustix::io::fcntl_getfd(m.as_fd()).unwrap();
    assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));
    println!("RECEIVED-OK");
}

fn bystander() {
    assert_eq!(
        shm_fds(),
        Vec::<i32>::new(),
        "a concurrent spawn inherits nothing"
    );
}

#[test]
fn a_memfd_and_a_segment_reach_a_spawned_child_at_chosen_numbers_and_nowhere_else() {
    match role().as_deref() {
        Some("receiver") => return receiver(),
        Some("bystander") => return bystander(),
        _ => {}
    }
    let _wd = Watchdog::new("child fds", Duration::from_secs(60));
    let test =
        test_path!(a_memfd_and_a_segment_reach_a_spawned_child_at_chosen_numbers_and_nowhere_else);
    let mut m = Memfd::create("to-child", 1 << 16).unwrap();
    let mut data = vec![0u8; 1 << 16];
    SplitMix64::new(5).fill(&mut data);
    m.write_bytes(0, &data).unwrap();
    m.seal(Seals::SIZE | Seals::WRITE).unwrap();
    let name = posix_name("tochild");
    let shm = Shm::create(&name, 3 * 4096).unwrap();
    let mut sdata = vec![0u8; 3 * 4096];
    SplitMix64::new(6).fill(&mut sdata);
    shm.write_bytes(0, &sdata).unwrap();

    // Spawn bystanders from another thread the whole time: none may inherit a descriptor.
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || n < 3 {
                let mut c = child(&test, "bystander");
                c.stdin(std::process::Stdio::null());
                Proc::spawn(&mut c)
                    .unwrap()
                    .expect_success(Duration::from_secs(30));
                n += 1;
            }
        });
        // Meanwhile, every kind of object is made, opened, probed and removed: not one of their
        // descriptors may reach a bystander, not even for an instant.
        for i in 0..40 {
            let n = posix_name("churn");
            let s = Shm::create(&n, 4096).unwrap();
            let o = Shm::open(&n, 4096).unwrap();
            assert!(ipc_shm::remove_stale(&n).is_err());
            let c = s.try_clone_fd(Access::ReadOnly).unwrap();
            let v = ipc_shm::SysvShm::create(ipc_shm::Key::PRIVATE, 4096).unwrap();
            let mut f = Memfd::create("churn", 4096).unwrap();
            if i % 2 == 0 {
                f.seal(Seals::SIZE | Seals::WRITE).unwrap();
            }
            drop((s, o, c, v, f));
        }
        for round in 0..3 {
            let mut c = child(&test, "receiver");
            c.env("SUM_M", fnv1a64(&data).to_string())
                .env("SUM_S", fnv1a64(&sdata).to_string())
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped());
            // Sources at colliding numbers are handled: the memfd's duplicate may sit at 9.
            let mfd = m.as_fd().try_clone_to_owned().unwrap();
            let sfd = shm.try_clone_fd(Access::ReadOnly).unwrap();
            assert!(mfd.as_raw_fd() > 2 && sfd.as_raw_fd() > 2);
            let fds = if round % 2 == 0 {
                ChildFds::new()
                    .fd_at(MEMFD_AT, mfd)
                    .unwrap()
                    .fd_at(SHM_AT, sfd)
                    .unwrap()
            } else {
                ChildFds::new()
                    .fd_at(SHM_AT, sfd)
                    .unwrap()
                    .fd_at(MEMFD_AT, mfd)
                    .unwrap()
            };
            fds.apply(&mut c);
            let mut p = Proc::spawn(&mut c).unwrap();
            drop(c); // the parent's copies go with the Command
            let out = p.inner().stdout.take().unwrap();
            let status = p.wait_timeout(Duration::from_secs(30)).unwrap();
            let text = std::io::read_to_string(out).unwrap();
            assert!(
                status.success() && text.contains("RECEIVED-OK"),
                "{status:?}: {text}"
            );
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    // A clone handed out does not carry the owner lock: the owner alone keeps it alive.
    let extra = shm.try_clone_fd(Access::ReadOnly).unwrap();
    drop(shm);
    assert!(!crate::dev_shm(&name).exists());
    drop(extra);
    assert!(matches!(
        ChildFds::new().fd_at(-1, m.into_fd()),
        Err(Error::InvalidDescriptor { fd: -1, .. })
    ));
}
